"""Attention dispatch and the Triton kernels, run on the CPU through TRITON_INTERPRET=1.

conftest.py sets TRITON_INTERPRET before triton is imported, so ``backend="triton"`` executes
the real kernels (each program in Python) on CPU tensors. Shapes stay tiny for that reason.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from urbangeo.errors import InputError
from urbangeo.model import attention as dispatch
from urbangeo.model.attention import AttentionBackendError, attention, select_backend

ta = pytest.importorskip("urbangeo.model.triton_attention")

pytestmark = pytest.mark.skipif(not ta.INTERPRETED,
                                reason="TRITON_INTERPRET=1 must be set before triton is imported")


def reference(q, k, v, causal=False, key_padding_mask=None, scale=None):
    """Naive float64 attention with the module's contract (bottom-right causal, empty rows -> 0)."""
    q, k, v = q.double(), k.double(), v.double()
    lq, lk = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    keep = torch.ones(lq, lk, dtype=torch.bool)
    if causal:
        keep = keep.tril(diagonal=lk - lq)
    keep = keep.expand(q.shape[0], 1, lq, lk)
    if key_padding_mask is not None:
        keep = keep & ~key_padding_mask[:, None, None, :]
    probs = torch.softmax(scores.masked_fill(~keep, -math.inf), dim=-1).nan_to_num(0.0)
    return probs @ v


def make_inputs(b, h, lq, lk, d, dtype=torch.float32, seed=0, pad_frac=0.0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=gen).to(dtype).requires_grad_()
               for n in (lq, lk, lk))
    mask = None
    if pad_frac:
        mask = torch.rand(b, lk, generator=gen) < pad_frac
        mask[:, 0] = False  # keep one key per row; fully masked rows have their own test
    grad_out = torch.randn(b, h, lq, d, generator=gen).to(dtype)
    return q, k, v, mask, grad_out


def close(actual, expected, atol, rtol):
    """Compare in float64 (reference grads w.r.t. fp32 leaves come back as fp32)."""
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol)


def grads(out, inputs, grad_out):
    return torch.autograd.grad(out, inputs, grad_out)


# (B, H, Lq, Lk, D, causal, pad_frac): self/cross/pooler shapes, odd lengths, both causal offsets.
CASES = [
    (1, 2, 5, 5, 16, False, 0.0),
    (2, 1, 37, 37, 32, True, 0.0),     # text-like causal self-attention, 3 blocks
    (2, 2, 13, 45, 16, False, 0.3),    # cross-attention with padding, Lq < Lk
    (1, 2, 1, 77, 64, False, 0.2),     # Lq=1 contrastive pooler
    (1, 1, 40, 33, 16, True, 0.0),     # causal with Lq > Lk: leading rows see nothing
    (2, 1, 9, 70, 32, True, 0.25),     # causal decode-like Lq < Lk with padding
    (1, 1, 33, 17, 128, False, 0.0),   # largest head dim
    (1, 1, 197, 197, 64, False, 0.1),  # ViT-B/16 at 224 (one head)
    (1, 1, 77, 77, 32, True, 0.2),     # CLIP text context, causal + padding
    (1, 1, 256, 197, 32, False, 0.0),  # generative pooler over ViT tokens
    (1, 1, 1, 257, 16, False, 0.0),    # contrastive pooler over a 256 px ViT (+CLS)
]


@pytest.mark.parametrize(("b", "h", "lq", "lk", "d", "causal", "pad"), CASES)
def test_triton_matches_float64_reference_and_sdpa(b, h, lq, lk, d, causal, pad):
    q, k, v, mask, g = make_inputs(b, h, lq, lk, d, pad_frac=pad, seed=lq * 7 + lk)
    out = attention(q, k, v, causal=causal, key_padding_mask=mask, backend="triton")
    ref = reference(q, k, v, causal, mask)
    sdpa = attention(q, k, v, causal=causal, key_padding_mask=mask, backend="sdpa")
    close(out, ref, atol=2e-6, rtol=1e-5)
    close(out, sdpa, atol=2e-6, rtol=1e-5)
    for ours, exact, theirs in zip(grads(out, (q, k, v), g), grads(ref, (q, k, v), g.double()),
                                   grads(sdpa, (q, k, v), g), strict=True):
        close(ours, exact, atol=1e-5, rtol=1e-4)
        close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_custom_scale_and_broadcast_mask():
    q, k, v, _, g = make_inputs(2, 1, 6, 11, 16, seed=3)
    mask = torch.zeros(1, 11, dtype=torch.bool)
    mask[0, 4:7] = True
    out = attention(q, k, v, key_padding_mask=mask, scale=0.3, backend="triton")
    ref = reference(q, k, v, key_padding_mask=mask.expand(2, 11), scale=0.3)
    close(out, ref, atol=2e-6, rtol=1e-5)
    for ours, exact in zip(grads(out, (q, k, v), g), grads(ref, (q, k, v), g.double()),
                           strict=True):
        close(ours, exact, atol=1e-5, rtol=1e-4)


def test_fully_masked_rows_give_zero_output_and_gradients():
    q, k, v, _, g = make_inputs(2, 2, 7, 19, 16, seed=4)
    mask = torch.zeros(2, 19, dtype=torch.bool)
    mask[1] = True  # every key of batch 1 is padding
    out = attention(q, k, v, key_padding_mask=mask, backend="triton")
    dq, dk, dv = grads(out, (q, k, v), g)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    for grad in (dq[1], dk[1], dv[1]):
        assert torch.equal(grad, torch.zeros_like(grad))
    assert all(t.isfinite().all() for t in (out, dq, dk, dv))
    assert out[0].abs().sum() > 0 and dq[0].abs().sum() > 0


def test_causal_rows_without_keys_are_zero_not_nan():
    # Lq > Lk and causal: query i sees keys j <= i - 5, so rows 0..4 see nothing.
    q, k, v, _, g = make_inputs(1, 1, 12, 7, 16, seed=5)
    out = attention(q, k, v, causal=True, backend="triton")
    dq, dk, dv = grads(out, (q, k, v), g)
    assert torch.equal(out[..., :5, :], torch.zeros_like(out[..., :5, :]))
    assert torch.equal(dq[..., :5, :], torch.zeros_like(dq[..., :5, :]))
    assert out[..., 5:, :].abs().min() > 0
    assert all(t.isfinite().all() for t in (dq, dk, dv))


def test_every_output_element_is_written():
    """Buffers pre-filled with NaN must come back fully overwritten (partial blocks included)."""
    q, k, v, mask, g = make_inputs(2, 1, 21, 35, 32, pad_frac=0.3, seed=6)
    q, k, v = q.detach(), k.detach(), v.detach()
    out = torch.full_like(q, math.nan)
    lse = torch.full((2, 1, 21), math.nan)
    ta.flash_forward(q, k, v, causal=True, key_padding_mask=mask, out=out, lse=lse)
    assert out.isfinite().all() and not lse.isnan().any()
    buffers = tuple(torch.full_like(t, 1e30) for t in (q, k, v))
    ta.flash_backward(g, q, k, v, out, lse, causal=True, key_padding_mask=mask, grads=buffers)
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    expected = grads(reference(qr, kr, vr, True, mask), (qr, kr, vr), g.double())
    close(out, reference(q, k, v, True, mask), atol=2e-6, rtol=1e-5)
    for ours, exact in zip(buffers, expected, strict=True):
        close(ours, exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_within_tolerance_of_float64(dtype, atol):
    q, k, v, mask, g = make_inputs(2, 2, 19, 41, 32, dtype=dtype, pad_frac=0.2, seed=7)
    out = attention(q, k, v, causal=True, key_padding_mask=mask, backend="triton")
    assert out.dtype == dtype
    ref = reference(q, k, v, True, mask)
    close(out, ref, atol=atol, rtol=atol)
    for ours, exact in zip(grads(out, (q, k, v), g), grads(ref, (q, k, v), g.double()),
                           strict=True):
        assert ours.dtype == dtype
        close(ours, exact, atol=4 * atol, rtol=4 * atol)


def test_strided_inputs_from_a_fused_qkv_projection():
    """q, k, v as permuted views of one (B, L, 3, H, D) projection, as a ViT block makes them."""
    b, n, h, d = 2, 23, 2, 16
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(b, n, h * d, generator=gen)
    proj = torch.nn.Linear(h * d, 3 * h * d)
    loss_weights = torch.randn(b, n, h, d, generator=gen)

    def weight_grad(attend):
        proj.weight.grad = None
        q, k, v = proj(x).view(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        assert not q.is_contiguous()
        out = attend(q, k, v).transpose(1, 2)  # so grad_out arrives strided too
        (out * loss_weights.to(out.dtype)).sum().backward()
        return out, proj.weight.grad.clone()

    out, ours = weight_grad(lambda q, k, v: attention(q, k, v, backend="triton"))
    ref, exact = weight_grad(reference)
    close(out, ref, atol=2e-6, rtol=1e-5)
    close(ours, exact, atol=1e-5, rtol=1e-4)


def test_backward_is_deterministic():
    q, k, v, mask, g = make_inputs(2, 2, 29, 47, 16, pad_frac=0.2, seed=9)
    runs = [grads(attention(q, k, v, causal=True, key_padding_mask=mask, backend="triton"),
                  (q, k, v), g) for _ in range(2)]
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


# ---- dispatch -------------------------------------------------------------------------------
def test_cpu_auto_uses_sdpa_and_matches_reference(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    q, k, v, mask, _ = make_inputs(1, 2, 4, 9, 16, pad_frac=0.3, seed=10)
    assert select_backend(q, k, v, mask) == ("sdpa", "tensors on cpu, not CUDA")
    out = attention(q, k, v, causal=True, key_padding_mask=mask)
    close(out, reference(q, k, v, True, mask), atol=2e-6, rtol=1e-5)


def test_env_var_and_argument_select_the_backend(monkeypatch):
    q, k, v, _, _ = make_inputs(1, 1, 4, 4, 16, seed=11)
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    assert select_backend(q, k, v) == ("triton", None)
    assert select_backend(q, k, v, backend="sdpa") == ("sdpa", "requested")
    monkeypatch.setenv(dispatch.ENV_VAR, " SDPA ")
    assert select_backend(q, k, v)[0] == "sdpa"
    assert select_backend(q, k, v, backend="triton") == ("triton", None)


def test_forced_backend_runs_that_backend(monkeypatch):
    calls = []
    monkeypatch.setattr(ta, "flash_attention", lambda *a, **kw: calls.append("triton"))
    monkeypatch.setattr(dispatch, "_sdpa", lambda *a, **kw: calls.append("sdpa"))
    q, k, v, _, _ = make_inputs(1, 1, 4, 4, 16, seed=12)
    attention(q, k, v, backend="triton")
    attention(q, k, v, backend="sdpa")
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    attention(q, k, v)
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    attention(q, k, v)
    assert calls == ["triton", "sdpa", "triton", "sdpa"]


@pytest.mark.parametrize("where", ["argument", "env"])
def test_unknown_backend_is_a_clear_user_error(monkeypatch, where):
    q, k, v, _, _ = make_inputs(1, 1, 4, 4, 16)
    kwargs = {"backend": "flash"} if where == "argument" else {}
    if where == "env":
        monkeypatch.setenv(dispatch.ENV_VAR, "flash")
    with pytest.raises(AttentionBackendError, match="auto, triton, sdpa") as info:
        attention(q, k, v, **kwargs)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


def test_forcing_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(ta, "INTERPRETED", False)
    q, k, v, _, _ = make_inputs(1, 1, 4, 4, 16)
    with pytest.raises(AttentionBackendError, match="TRITON_INTERPRET=1"):
        attention(q, k, v, backend="triton")


@pytest.fixture
def broken_triton(monkeypatch):
    """A triton whose every attribute raises, as an incompatible or half-installed one does
    (e.g. ``triton.knobs`` on Triton < 3.4 raised AttributeError at our module's import)."""
    def fail(name):
        raise RuntimeError(f"triton.{name}: simulated broken install")

    for name in ("triton", "triton.language"):
        fake = types.ModuleType(name)
        fake.__getattr__ = fail
        monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.delitem(sys.modules, "urbangeo.model.triton_attention")
    dispatch._triton_kernels.cache_clear()
    yield
    dispatch._triton_kernels.cache_clear()  # the next caller imports the real module again


def test_broken_triton_falls_back_in_auto_and_fails_clearly_when_forced(broken_triton):
    reason = dispatch._triton_kernels()
    assert isinstance(reason, str) and "simulated broken install" in reason
    assert "RuntimeError" in reason and "'sdpa'" in reason
    # "auto" on CUDA tensors (only .is_cuda is consulted before the kernels are asked for).
    cuda_like = types.SimpleNamespace(is_cuda=True)
    assert select_backend(cuda_like, cuda_like, cuda_like, backend="auto") == ("sdpa", reason)
    q, k, v, _, _ = make_inputs(1, 1, 4, 4, 16)
    with pytest.raises(AttentionBackendError, match="simulated broken install"):
        attention(q, k, v, backend="triton")


def test_missing_triton_module_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "urbangeo.model.triton_attention", None)  # import fails
    dispatch._triton_kernels.cache_clear()
    try:
        reason = dispatch._triton_kernels()
    finally:
        dispatch._triton_kernels.cache_clear()
    assert isinstance(reason, str) and "cannot be loaded" in reason


def test_interpreter_flag_is_read_like_triton():
    """Parsed from the environment as Triton parses it, so both agree on every spelling."""
    code = "from urbangeo.model import triton_attention as ta; print(ta.INTERPRETED)"
    for value, expected in (("on", "True"), ("TRUE", "True"), ("0", "False")):
        env = dict(os.environ, TRITON_INTERPRET=value)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.stdout.strip() == expected, (value, done.stderr[-2000:])


@pytest.mark.parametrize(("d", "dtype", "why"), [(24, torch.float32, "head dim 24"),
                                                  (16, torch.float64, "dtypes")])
def test_unsupported_inputs_fall_back_to_sdpa_with_a_reason(d, dtype, why):
    q, k, v, mask, _ = make_inputs(1, 2, 5, 8, d, dtype=dtype, pad_frac=0.3, seed=13)
    with pytest.warns(RuntimeWarning, match=why):
        out = attention(q, k, v, key_padding_mask=mask, backend="triton")
    close(out, reference(q, k, v, False, mask), atol=2e-6,
                               rtol=1e-5)


def test_sdpa_path_without_mask_is_plain_sdpa():
    """No mask, no causal offset: the dispatch returns SDPA's own result, bit for bit."""
    q, k, v, _, _ = make_inputs(2, 2, 9, 9, 16, seed=14)
    for causal in (False, True):
        assert torch.equal(attention(q, k, v, causal=causal),
                           F.scaled_dot_product_attention(q, k, v, is_causal=causal))


# (candidates, streamed block, resident tiles), as the module passes them to _prune
KERNELS = [("_FWD_CONFIGS", "BLOCK_N", 1), ("_DKDV_CONFIGS", "BLOCK_M", 2),
           ("_DQ_CONFIGS", "BLOCK_N", 2)]


def prune(kernel, lq, lk, head_d=64, dtype=torch.bfloat16):
    """The GPU autotuner's pruning, called as Triton calls it (positional args by name)."""
    candidates, streams, residents = kernel
    return ta._prune(ta._configs(getattr(ta, candidates)),
                     {"Q": torch.empty(0, dtype=dtype), "LQ_BUCKET": ta._bucket(lq),
                      "LK_BUCKET": ta._bucket(lk)}, streams=streams, residents=residents,
                     HEAD_D=head_d)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gpu_autotune_candidates_fit_the_sequence(kernel):
    """Pure-Python check of the GPU config pruning (the GPU autotuner itself cannot run here)."""
    pooler, vit, short = prune(kernel, 1, 197), prune(kernel, 197, 197), prune(kernel, 3, 5)
    assert pooler and all(c.kwargs["BLOCK_M"] == 16 for c in pooler)
    assert vit and all(c.kwargs["BLOCK_M"] > 16 for c in vit)
    assert short and all(c.kwargs["BLOCK_M"] == 16 for c in short)  # never an empty list


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("head_d", "dtype"), [(64, torch.bfloat16), (128, torch.bfloat16),
                                               (64, torch.float32), (128, torch.float32)])
def test_gpu_autotune_drops_configs_over_the_h100_shared_memory(kernel, head_d, dtype):
    candidates, streams, residents = kernel
    every = ta._configs(getattr(ta, candidates))
    kept = prune(kernel, 4096, 4096, head_d, dtype)
    size = torch.empty(0, dtype=dtype).element_size()

    def smem(config):
        return ta.config_smem(config, streams, residents, head_d, size)

    assert kept and all(smem(c) <= ta.SMEM_LIMIT for c in kept)
    over = [c for c in every if smem(c) > ta.SMEM_LIMIT]
    assert not set(map(str, over)) & set(map(str, kept))
    if head_d == 128 and dtype == torch.float32:
        assert over  # e.g. the 128x128 forward (458,752 B compiled for sm_90)


def test_launch_grid_for_70000_batch_heads_is_within_cuda_limits():
    """ViT-B at batch 5,834 (12 heads): more batch*heads than grid axes 1 and 2 allow."""
    bh, length = 70_000, 197
    blocks = [ta.MIN_BLOCK, ta._DELTA_BLOCK_M] + [
        c[i] for configs in (ta._FWD_CONFIGS, ta._DKDV_CONFIGS, ta._DQ_CONFIGS)
        for c in configs for i in (0, 1)]
    for block in blocks:
        grid = ta.launch_grid(length, block, bh)
        assert len(grid) == 1 and 0 < grid[0] <= 2**31 - 1  # CUDA's limit on axis 0
        assert grid[0] == bh * math.ceil(length / block)  # one program per block per head


def test_inputs_needing_more_programs_than_cuda_allows_fall_back():
    small = torch.zeros(1, 1, 1, 16)
    fits = small.expand(70_000, 16, 197, 16)  # expand: no memory behind the huge shapes
    assert ta.unsupported_reason(fits, fits, fits, None) is None
    huge = small.expand(2**16, 2**10, 64, 16)  # 2**26 heads x 4 blocks = 2**28: fits
    assert ta.unsupported_reason(huge, huge, huge, None) is None
    too_many = small.expand(2**16, 2**10, 1024, 16)  # 2**26 heads x 64 blocks > 2**31 - 1
    reason = ta.unsupported_reason(too_many, too_many, too_many, None)
    assert reason is not None and "split the batch" in reason


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no call site may fall back to SDPA
def test_tiny_urbanclip_trains_the_same_with_either_backend(monkeypatch):
    """Forward and backward through every attention call site of the model (ViT, poolers,
    causal text with padding and CLIP's "!" = pad id inside a caption, cross-attention)."""
    urbanclip = pytest.importorskip("urbangeo.model.urbanclip")
    from urbangeo.model.config import UrbanCLIPConfig

    config = UrbanCLIPConfig.from_preset("tiny", image_size=32, context_length=10)
    torch.manual_seed(0)
    model = urbanclip.UrbanCLIP(config).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, config.image_size, config.image_size, generator=gen)
    tokens = torch.randint(3, config.vocab_size, (2, 9), generator=gen)
    tokens[:, 0] = config.bos_id
    tokens[:, 3] = config.pad_id  # text, not padding: it comes before the EOS
    tokens[1, 6] = config.eos_id
    tokens[1, 7:] = config.pad_id
    kernel_calls = []
    flash = ta.flash_attention
    monkeypatch.setattr(ta, "flash_attention",
                        lambda *a, **kw: kernel_calls.append(1) or flash(*a, **kw))
    results, gradients = {}, {}
    for backend in ("sdpa", "triton"):
        monkeypatch.setenv(dispatch.ENV_VAR, backend)
        model.zero_grad()
        results[backend] = model(images, tokens)
        results[backend]["losses"]["total"].backward()
        gradients[backend] = {name: p.grad for name, p in model.named_parameters()}
    assert len(kernel_calls) >= 4  # ViT, pooler(s), text, cross layers
    for key in ("image_emb", "text_emb", "logits"):
        close(results["triton"][key], results["sdpa"][key], atol=1e-5, rtol=1e-4)
    for key in ("con", "lm"):
        close(results["triton"]["losses"][key], results["sdpa"]["losses"][key], atol=1e-5,
              rtol=1e-5)
    assert all(g is not None for g in gradients["triton"].values())
    for name, grad in gradients["triton"].items():
        scale = gradients["sdpa"][name].abs().max().item()
        close(grad, gradients["sdpa"][name], atol=1e-5 * max(scale, 1.0), rtol=1e-4)


_COMPILE_FOR_H100 = """
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from urbangeo.model import triton_attention as ta

assert not ta.INTERPRETED
every = sys.argv[1] == "every"
pointers = {"Q", "K", "V", "Out", "DO", "DQ", "DK", "DV"}
for kernel, candidates, streams, residents in (
        (ta._fwd_kernel, ta._FWD_CONFIGS, "BLOCK_N", 1),
        (ta._bwd_dkdv_kernel, ta._DKDV_CONFIGS, "BLOCK_M", 2),
        (ta._bwd_dq_kernel, ta._DQ_CONFIGS, "BLOCK_N", 2)):
    for head_d, dtype, name in ((64, torch.bfloat16, "bf16"), (128, torch.float32, "fp32"),
                                (128, torch.bfloat16, "bf16"), (64, torch.float32, "fp32")):
        size = torch.empty(0, dtype=dtype).element_size()
        # What the autotuner would try at long sequences (where every block size is allowed).
        kept = ta._prune(ta._configs(candidates), {"Q": torch.empty(0, dtype=dtype),
                         "LQ_BUCKET": 4096, "LK_BUCKET": 4096}, streams=streams,
                         residents=residents, HEAD_D=head_d)
        estimate = {str(c): ta.config_smem(c, streams, residents, head_d, size) for c in kept}
        if not every:  # the riskiest kept config, at the two corners of (head dim, dtype)
            if (head_d, name) not in ((64, "bf16"), (128, "fp32")):
                continue
            kept = [max(kept, key=lambda c: estimate[str(c)])]
        for config in kept:
            consts = dict(HAS_MASK=True, CAUSAL=True, HEAD_D=head_d, DOT_PREC="tf32",
                          **config.kwargs)
            signature = {n: "constexpr" if n in consts else "*fp32" if n in ("LSE", "DELTA")
                         else "*u8" if n == "KPM" else "fp32" if n in ("qk_scale", "scale")
                         else f"*{name}" if n in pointers else "i32" for n in kernel.arg_names}
            compiled = triton.compile(ASTSource(kernel, signature, consts),
                                      target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": config.num_warps,
                                               "num_stages": config.num_stages})
            print(kernel.__name__, head_d, name, config.kwargs["BLOCK_M"],
                  config.kwargs["BLOCK_N"], config.num_warps, config.num_stages,
                  compiled.metadata.shared, estimate[str(config)], flush=True)
"""


def test_kernels_compile_for_h100_without_a_gpu(tmp_path):
    """The interpreter accepts code the GPU compiler rejects; compile for sm_90 (PTX + ptxas).

    By default the riskiest config the autotuner keeps (largest shared memory estimate) of each
    kernel at head dim 64 in bf16 and 128 in fp32 (~25 s); URBANGEO_COMPILE_EVERY_CONFIG=1
    compiles every kept config at head dims 64 and 128 in bf16 and fp32 (minutes). Each must
    fit the H100's shared memory, within the estimate the pruning relies on.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    every = os.environ.get("URBANGEO_COMPILE_EVERY_CONFIG") == "1"
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_H100,
                           "every" if every else "riskiest"], env=env, text=True,
                          capture_output=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    kernels = [row[0] for row in rows]
    assert set(kernels) == {"_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"}
    assert len(rows) >= 6
    for row in rows:
        shared, estimate = int(row[-2]), int(row[-1])
        assert shared <= estimate <= ta.SMEM_LIMIT, row


BENCH_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "attention.py"


def test_benchmark_json_is_strict_even_with_nan_and_inf(tmp_path, monkeypatch):
    """A NaN error or an infinite ratio must come out as null, not as invalid JSON."""
    spec = importlib.util.spec_from_file_location("bench_attention", BENCH_SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_attention", bench)  # dataclasses look it up
    spec.loader.exec_module(bench)
    payload = {"err": math.nan, "rows": [{"ratio": math.inf}, -math.inf, 1.5], "name": "x",
               "pair": (math.nan, 2)}
    bench.write_json(tmp_path / "r.json", payload)

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    loaded = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert loaded == {"err": None, "rows": [{"ratio": None}, None, 1.5], "name": "x",
                      "pair": [None, 2]}


def test_benchmark_script_help_and_clear_exit_without_cuda():
    script = BENCH_SCRIPT
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "--cpu-smoke" in shown.stdout
    if torch.cuda.is_available():
        return
    refused = subprocess.run([sys.executable, str(script), "--skip-model"], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "no CUDA device" in refused.stderr
