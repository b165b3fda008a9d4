"""bench/train_step.py: its smallest mode runs end to end, and its parity checks can fail."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("open_clip")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_checks_parity_and_times_both_models(bench, tmp_path):
    out = tmp_path / "train_step.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--smoke", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    payload = json.loads(out.read_text())
    assert payload["environment"]["torch_threads"] == threads
    (res,) = payload["results"]
    assert res["torch_threads"] == 1
    assert res["ok"] and res["config_round_trips"] and res["params"]["same"]
    assert res["params"]["ours"]["total"] > 0
    parity = res["parity"]
    assert parity["ok"] and max(parity["abs_diff"].values()) <= parity["tolerance"]
    assert all(0 < parity["ours"][k] < 50 for k in ("con", "lm"))  # finite, sane losses
    timings = res["timings"]
    assert set(timings) == {"ours", "open_clip"}
    for t in timings.values():
        assert len(t["samples_ms"]) == 2
        assert t["min_ms"] <= t["median_ms"] <= t["max_ms"]
        assert t["images_per_s"] == pytest.approx(res["batch"] / t["median_ms"] * 1e3)
    assert res["time_ratio_ours_over_open_clip"]["ours"] == pytest.approx(
        timings["ours"]["median_ms"] / timings["open_clip"]["median_ms"])


def test_parity_check_catches_a_wrong_weight(bench):
    from open_clip.coca_model import CoCa
    from open_clip.loss import CoCaLoss

    config = bench.our_config("smoke")
    torch.manual_seed(0)
    reference = CoCa(**bench.openclip_config(config)).train()
    proj = reference.text_decoder.text_projection
    torch.nn.init.normal_(proj.data, std=0.2)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    key = "text.transformer.resblocks.0.attn.in_proj_weight"  # split into q/k/v by our importer
    state[key] = state[key] + 0.5 * torch.randn_like(state[key])
    loss_fn = CoCaLoss(caption_loss_weight=1.0, clip_loss_weight=1.0, pad_id=config.pad_id)
    batch = bench.make_batches(config, 4, count=1, seed=1)[0]
    parity = bench.check_parity(reference, loss_fn, state, config, batch)
    assert not parity["ok"]
    assert min(parity["abs_diff"][k] for k in ("con", "lm")) > parity["tolerance"]


def test_config_mapping_round_trips_only_when_sizes_match(bench):
    config = bench.our_config("cpu128")
    assert bench.config_round_trips(config, bench.openclip_config(config))
    other = bench.openclip_config(dataclasses.replace(config, multimodal_layers=3))
    assert not bench.config_round_trips(config, other)


def test_batches_keep_special_ids_where_they_belong(bench):
    config = bench.our_config("tiny")
    images, tokens = bench.make_batches(config, 8, count=1, seed=0)[0]
    assert images.shape == (8, 3, config.image_size, config.image_size)
    assert (tokens[:, 0] == config.bos_id).all()
    assert ((tokens == config.eos_id).sum(dim=1) == 1).all()
    body = tokens[:, 1:][~config.padding_mask(tokens)[:, 1:] & (tokens[:, 1:] != config.eos_id)]
    assert not torch.isin(body, torch.tensor([config.pad_id, config.bos_id])).any()
