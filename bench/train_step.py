"""Benchmark one UrbanCLIP training step against open_clip's CoCa at the same sizes.

    python bench/train_step.py                   # CPU: configs cpu128 and tiny, fp32
    python bench/train_step.py --device cuda     # GPU: tiny and coca_vit_b32, AMP bf16,
                                                 # ours with Triton and with SDPA attention
    python bench/train_step.py --smoke           # the whole script at toy sizes (tests)

open_clip's ``CoCa`` is built from an explicit config dict derived from ours (nothing is
downloaded). Before any timing, each config is checked: the open_clip config must map back onto
ours exactly (``config_from_openclip``), both models must have the same parameter count, and
with open_clip's weights copied into ours by our importer both must give the same contrastive
and captioning losses on one batch (float32, no autocast).

A train step is what training does per batch: forward with both losses (contrastive +
captioning, lambda 1 and 1; open_clip's ``CoCaLoss``), backward, AdamW step, zero_grad (and
open_clip's logit-scale clamp, which its training loop applies after each step; ours clamps in
the forward). Both models start from the same weights. After warm-up the contestants' timed
steps are interleaved, the order alternating every round (AB BA AB ...), so that load from other
processes on a shared machine hits both alike. Reported: median, min and max ms per step,
images/s, and the TIME RATIO ours / open_clip (< 1: OURS IS FASTER).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: Benchmark configs: our preset plus overrides, and the batch size timed.
CONFIGS: dict[str, dict[str, Any]] = {
    # A CPU-sized model in open_clip's released pooling mode ("single" = attentional_pool True).
    "cpu128": {"preset": "tiny", "batch": 32, "overrides": dict(
        image_size=128, patch_size=16, vision_width=128, vision_layers=4, vision_heads=4,
        embed_dim=128, pooler_mode="single", n_queries=33, pooler_heads=4, vocab_size=4096,
        context_length=32, text_width=128, text_heads=4, text_layers=2, multimodal_layers=2)},
    # What `urbangeo train` and the demo use: the paper's dual pooler ("parallel").
    "tiny": {"preset": "tiny", "batch": 32, "overrides": {}},
    "coca_vit_b32": {"preset": "coca_vit_b32", "batch": 64, "overrides": {}},
    # --smoke: every code path at toy sizes, seconds on a CPU.
    "smoke": {"preset": "tiny", "batch": 4, "overrides": dict(
        image_size=32, vision_width=32, vision_layers=1, embed_dim=32, n_queries=4,
        vocab_size=64, context_length=8, text_width=32)},
}
DEFAULT_CONFIGS = {"cpu": ("cpu128", "tiny"), "cuda": ("tiny", "coca_vit_b32")}
REFERENCE = "open_clip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time a full UrbanCLIP train step against open_clip's CoCa at the same "
                    "config, after checking parameter counts and losses match "
                    "(time ratio ours/open_clip < 1 = ours faster).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--configs", default=None,
                        help=f"comma-separated subset of {', '.join(CONFIGS)} (default: "
                             f"{','.join(DEFAULT_CONFIGS['cpu'])} on cpu, "
                             f"{','.join(DEFAULT_CONFIGS['cuda'])} on cuda)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per step (default: each config's own, see CONFIGS)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed steps per contestant (default 30 on cpu, 50 on cuda)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per contestant first (default 3 cpu, 10 cuda)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                        help="fp32, or AMP autocast to bf16 (default fp32 on cpu, bf16 on cuda)")
    parser.add_argument("--threads", default=None,
                        help="comma-separated torch.set_num_threads values, each timed in "
                             "turn, e.g. 1,2 (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results path (default bench/results/train_step-<device>.json;"
                             " none with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help="run everything on the CPU at toy sizes, 2 steps; timings mean "
                             "nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.configs = "cpu", args.configs or "smoke"
        args.iters, args.warmup = args.iters or 2, 1 if args.warmup is None else args.warmup
    cuda = args.device == "cuda"
    args.configs = (args.configs.split(",") if args.configs
                    else list(DEFAULT_CONFIGS[args.device]))
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    args.iters = args.iters or (50 if cuda else 30)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    try:
        args.threads = [int(n) for n in args.threads.split(",")] if args.threads else [None]
    except ValueError:
        parser.error(f"--threads takes comma-separated integers, got {args.threads!r}")
    if any(n is not None and n < 1 for n in args.threads):
        parser.error("--threads values must be >= 1")
    if args.iters < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 2):
        parser.error("--iters must be >= 1, --warmup >= 0 and --batch >= 2 (the contrastive "
                     "loss needs negatives)")
    return args


# ---- configs --------------------------------------------------------------------------------
def our_config(name: str) -> Any:
    from urbangeo.model.config import UrbanCLIPConfig

    spec = CONFIGS[name]
    return UrbanCLIPConfig.from_preset(spec["preset"], **spec["overrides"])


def openclip_config(config: Any) -> dict[str, Any]:
    """open_clip's CoCa config dict (embed_dim, vision/text/multimodal cfg) for our config.

    The inverse of ``urbangeo.model.openclip_import.config_from_openclip``.
    """
    return dict(
        embed_dim=config.embed_dim,
        vision_cfg=dict(
            image_size=config.image_size, patch_size=config.patch_size,
            width=config.vision_width, layers=config.vision_layers,
            head_width=config.vision_width // config.vision_heads, mlp_ratio=config.mlp_ratio,
            attentional_pool="parallel" if config.pooler_mode == "dual" else True,
            attn_pooler_queries=config.n_queries, attn_pooler_heads=config.pooler_heads,
            output_tokens=True),
        text_cfg=dict(
            context_length=config.context_length, vocab_size=config.vocab_size,
            width=config.text_width, heads=config.text_heads, layers=config.text_layers,
            mlp_ratio=config.mlp_ratio, embed_cls=True, pad_id=config.pad_id,
            output_tokens=True),
        multimodal_cfg=dict(
            context_length=config.context_length, vocab_size=config.vocab_size,
            width=config.text_width, heads=config.text_heads, layers=config.multimodal_layers,
            mlp_ratio=config.mlp_ratio),
    )


def config_round_trips(config: Any, oc_cfg: dict[str, Any]) -> bool:
    """Does open_clip's config map back onto ours (so both really have the same sizes)?"""
    from urbangeo.model.openclip_import import config_from_openclip

    back = config_from_openclip(oc_cfg, bos_id=config.bos_id, eos_id=config.eos_id,
                                cls_mask=config.cls_mask)
    return back == config


def make_batches(config: Any, batch: int, count: int, seed: int) -> list[tuple[Any, Any]]:
    """Normalised-looking images and ragged token rows: BOS, words, EOS, then pad ids.

    Word ids avoid the special ids, so every padding rule (ours "correct" and "legacy",
    open_clip's ``ignore_index=pad_id``) sees the same padding.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    specials = {config.pad_id, config.bos_id, config.eos_id}
    filler = min(set(range(len(specials) + 1)) - specials)
    n = config.context_length
    out = []
    for _ in range(count):
        images = torch.randn(batch, 3, config.image_size, config.image_size, generator=gen)
        tokens = torch.randint(0, config.vocab_size, (batch, n), generator=gen)
        for s in specials:
            tokens[tokens == s] = filler
        lengths = torch.randint(max(3, n // 4), n + 1, (batch,), generator=gen)
        tokens[torch.arange(n)[None, :] >= lengths[:, None]] = config.pad_id
        tokens[torch.arange(batch), lengths - 1] = config.eos_id
        tokens[:, 0] = config.bos_id
        out.append((images, tokens))
    return out


# ---- the two train steps ---------------------------------------------------------------------
def openclip_losses(model: Any, loss_fn: Any, images: Any, tokens: Any) -> dict[str, Any]:
    """open_clip's CoCa forward and CoCaLoss, as its training loop runs them.

    Its "parallel" pooler (our "dual") returns image features of shape (B, 1, E), which
    CoCaLoss cannot take; they are flattened to (B, E), a view that costs nothing.
    """
    out = model(images, tokens)
    image_features = out["image_features"].flatten(1)
    losses = loss_fn(image_features, out["text_features"], out["logits"],
                     out["labels"], out["logit_scale"], output_dict=True)
    con, lm = losses["contrastive_loss"], losses["caption_loss"]
    return {"total": con + lm, "con": con, "lm": lm}


def our_losses(model: Any, images: Any, tokens: Any) -> dict[str, Any]:
    return model(images, tokens)["losses"]


def make_step(model: Any, losses: Callable[[Any, Any], Any], device: Any, amp: Any,
              after_step: Callable[[], None] | None = None,
              attention_backend: str | None = None) -> Callable[[tuple[Any, Any]], None]:
    """One training step on a batch (already on ``device``): fwd, both losses, bwd, AdamW."""
    import torch

    from urbangeo.model.attention import ENV_VAR

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1,
                                  fused=device.type == "cuda")

    def step(data: tuple[Any, Any]) -> None:
        previous = os.environ.get(ENV_VAR)
        if attention_backend is not None:  # read by every attention call of our model
            os.environ[ENV_VAR] = attention_backend
        try:
            with amp():
                loss = losses(*data)["total"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
        finally:
            if previous is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = previous

    return step


def time_interleaved(steps: dict[str, Callable[[Any], None]], batches: list[Any], warmup: int,
                     iters: int, sync: Callable[[], None]) -> dict[str, list[float]]:
    """Per-step wall times (ms) of each contestant, rounds interleaved, order alternating."""
    names = list(steps)
    for i in range(warmup):
        for name in names:
            steps[name](batches[i % len(batches)])
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            steps[name](batches[i % len(batches)])
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def summary(samples: list[float], batch: int) -> dict[str, Any]:
    median = statistics.median(samples)
    return {"median_ms": median, "min_ms": min(samples), "max_ms": max(samples),
            "images_per_s": batch / median * 1e3, "samples_ms": samples}


# ---- one config -----------------------------------------------------------------------------
def param_counts(model: Any) -> dict[str, int]:
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for tower in ("visual", "text", "text_decoder"):
        counts[tower] = sum(p.numel() for p in getattr(model, tower).parameters())
    return counts


def check_parity(reference: Any, loss_fn: Any, state: dict[str, Any], config: Any,
                 batch: tuple[Any, Any]) -> dict[str, Any]:
    """Losses of open_clip and of ours holding its weights, fp32 on the CPU, one batch.

    Ours runs with ``cls_mask="legacy"`` here: that is open_clip's text padding rule, which
    its weights need to give the same text embedding (see UrbanCLIPConfig).
    """
    import dataclasses

    import torch

    from urbangeo.model.openclip_import import load_openclip_coca

    ours = load_openclip_coca(state, dataclasses.replace(config, cls_mask="legacy")).train()
    with torch.no_grad():
        a = openclip_losses(reference, loss_fn, *batch)
        b = ours(*batch)["losses"]
    diffs = {k: abs(float(a[k]) - float(b[k])) for k in ("total", "con", "lm")}
    tolerance = 1e-5 * max(1.0, abs(float(a["total"])))
    return {"open_clip": {k: float(v) for k, v in a.items()},
            "ours": {k: float(v) for k, v in b.items()}, "abs_diff": diffs,
            "tolerance": tolerance, "ok": all(d <= tolerance for d in diffs.values())}


def bench_config(name: str, args: argparse.Namespace, device: Any) -> dict[str, Any]:
    import torch
    from open_clip.coca_model import CoCa
    from open_clip.loss import CoCaLoss

    from urbangeo.model.openclip_import import load_openclip_coca

    config = our_config(name)
    oc_cfg = openclip_config(config)
    batch = args.batch or CONFIGS[name]["batch"]
    result: dict[str, Any] = {"config": name, "batch": batch, "dtype": args.dtype,
                              "urbangeo_config": config.to_dict(), "open_clip_config": oc_cfg,
                              "config_round_trips": config_round_trips(config, oc_cfg)}
    torch.manual_seed(0)
    reference = CoCa(**oc_cfg).train()
    # open_clip 3.3 leaves the decoder's text_projection as torch.empty (its init_parameters
    # is never called, and fails if called): garbage, even NaN, would make the losses
    # meaningless. Initialised here as that method intends.
    proj = reference.text_decoder.text_projection
    torch.nn.init.normal_(proj.data, std=proj.shape[0] ** -0.5)
    result["open_clip_weights_finite"] = all(bool(p.isfinite().all())
                                             for p in reference.parameters())
    loss_fn = CoCaLoss(caption_loss_weight=1.0, clip_loss_weight=1.0, pad_id=config.pad_id)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    ours = load_openclip_coca(state, config).train()
    result["params"] = {"ours": param_counts(ours), REFERENCE: param_counts(reference)}
    result["params"]["same"] = result["params"]["ours"] == result["params"][REFERENCE]
    batches = make_batches(config, batch, count=2, seed=1)
    images, tokens = batches[0]  # 8 rows are enough to compare, and fast for big configs
    result["parity"] = check_parity(reference, loss_fn, state, config,
                                    (images[:8], tokens[:8]))
    result["ok"] = (result["config_round_trips"] and result["params"]["same"]
                    and result["open_clip_weights_finite"] and result["parity"]["ok"])
    if not result["ok"]:
        return result

    cuda = device.type == "cuda"
    reference, ours = reference.to(device), ours.to(device)
    batches = [(i.to(device), t.to(device)) for i, t in batches]

    def amp() -> Any:
        return (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16"
                else nullcontext())

    def clamp_scale() -> None:  # open_clip's train loop does this after every optimizer step
        with torch.no_grad():
            reference.logit_scale.clamp_(0, math.log(100))

    steps: dict[str, Callable[[Any], None]] = {}
    backends, result["attention"] = our_backends(cuda, config, device)
    for i, (label, backend) in enumerate(backends):  # each with its own weights and optimizer
        model = ours if i == 0 else load_openclip_coca(state, config).to(device).train()
        steps[label] = make_step(model, functools.partial(our_losses, model), device, amp,
                                 attention_backend=backend)
    steps[REFERENCE] = make_step(
        reference, lambda images, tokens: openclip_losses(reference, loss_fn, images, tokens),
        device, amp, after_step=clamp_scale)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = time_interleaved(steps, batches, args.warmup, args.iters, sync)
    result["timings"] = {k: summary(v, batch) for k, v in times.items()}
    ref_ms = result["timings"][REFERENCE]["median_ms"]
    result["time_ratio_ours_over_open_clip"] = {
        k: v["median_ms"] / ref_ms for k, v in result["timings"].items() if k != REFERENCE}
    return result


def our_backends(cuda: bool, config: Any, device: Any
                 ) -> tuple[list[tuple[str, str | None]], dict[str, Any]]:
    """(label, URBANGEO_ATTENTION value) of our contestants: on the CPU the default path
    (SDPA); on CUDA forced SDPA, and forced Triton when it can run."""
    if not cuda:
        return [("ours", None)], {"triton": "not timed on the CPU (interpreter only)"}
    import torch

    from urbangeo.model.attention import AttentionBackendError, select_backend

    head_dim = config.vision_width // config.vision_heads
    probe = torch.zeros(2, config.vision_heads, 4, head_dim, device=device,
                        dtype=torch.bfloat16)
    try:
        chosen, why = select_backend(probe, probe, probe, backend="triton")
    except AttentionBackendError as exc:
        chosen, why = "sdpa", str(exc)
    sdpa = ("ours_sdpa", "sdpa")
    if chosen == "triton":
        return [("ours_triton", "triton"), sdpa], {"triton": "timed"}
    return [sdpa], {"triton": f"not timed: {why}"}


# ---- report ---------------------------------------------------------------------------------
def environment(device: Any, args: argparse.Namespace) -> dict[str, Any]:
    import open_clip
    import torch

    info: dict[str, Any] = {
        "device": str(device), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "open_clip": open_clip.__version__, "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "ours_attention_env": os.environ.get("URBANGEO_ATTENTION")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_config(res: dict[str, Any]) -> None:
    p = res["params"]
    print(f"\n== {res['config']}: batch {res['batch']}, {res['dtype']}, "
          f"{res['torch_threads']} torch threads; params ours "
          f"{p['ours']['total']:,} vs open_clip {p[REFERENCE]['total']:,} "
          f"({'same' if p['same'] else 'DIFFERENT, per tower: ' + json.dumps(p)})")
    if not res["config_round_trips"]:
        print("   CONFIG MISMATCH: open_clip's config does not map back onto ours")
    par = res["parity"]
    print("   losses on one batch (fp32), open_clip vs ours with its weights: " + ", ".join(
        f"{k} {par['open_clip'][k]:.6f}/{par['ours'][k]:.6f}" for k in ("total", "con", "lm"))
        + f"  max diff {max(par['abs_diff'].values()):.1e}  "
          f"{'OK' if par['ok'] else 'PARITY FAILED'}")
    if "timings" not in res:
        print("   not timed: the checks above failed")
        return
    print(f"   {'contestant':<14}{'median ms':>12}{'min':>12}{'max':>12}{'images/s':>10}"
          f"{'ours/open_clip':>16}")
    for name, t in res["timings"].items():
        ratio = res["time_ratio_ours_over_open_clip"].get(name)
        print(f"   {name:<14}{t['median_ms']:>12.2f}{t['min_ms']:>12.2f}{t['max_ms']:>12.2f}"
              f"{t['images_per_s']:>10.1f}{'' if ratio is None else f'{ratio:.3f}':>16}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    from urbangeo._atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device visible to PyTorch; run on a GPU machine or use "
              "--device cpu", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    env = environment(device, args)
    print(f"device {env.get('gpu', env['cpu'])}; {env['cpu_count']} CPUs, torch threads "
          f"{env['torch_threads']} by default; torch {env['torch']}, open_clip {env['open_clip']}, "
          f"triton {env['triton']}; {args.iters} timed steps per contestant after "
          f"{args.warmup} warm-up, interleaved (AB BA ...)")
    if args.smoke:
        print("(--smoke: toy sizes, the timings mean nothing)")
    results = []
    for threads in args.threads:
        if threads is not None:
            torch.set_num_threads(threads)
        for name in args.configs:
            results.append({"torch_threads": torch.get_num_threads(),
                            **bench_config(name, args, device)})
            print_config(results[-1])
    payload = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
               "ratio_definition": "ours median ms / open_clip median ms; < 1 = ours faster",
               "step": "forward + contrastive and captioning losses (1:1) + backward + AdamW "
                       "step + zero_grad (+ open_clip's logit-scale clamp)",
               "results": results}
    out = args.out
    if out is None and not args.smoke:
        out = REPO / "bench" / "results" / f"train_step-{args.device}.json"
    if out is not None:
        write_json(out, payload)
        print(f"\nresults written to {out}")
    print("\nTIME RATIO = ours median ms / open_clip median ms   (< 1: OURS IS FASTER)")
    for res in results:
        for name, ratio in res.get("time_ratio_ours_over_open_clip", {}).items():
            print(f"  {res['config']:<14}{res['torch_threads']:>2} threads  {name:<14}"
                  f"{ratio:.3f}")
    failed = [res["config"] for res in results if not res["ok"]]
    if failed:
        print(f"\nCHECKS FAILED for {failed}: not timed.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
