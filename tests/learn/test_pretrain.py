"""UrbanCLIP pretraining on the synthetic city: loss goes down, the model directory keeps its
contract, runs resume bit for bit, option changes are refused, grid search reports trials."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from urbangeo import api
from urbangeo.errors import InputError
from urbangeo.learn.data import load_cell_data
from urbangeo.learn.pretrain import TrainOptions, grid_search, train_model
from urbangeo.learn.train_batches import (
    augment,
    epoch_batches,
    steps_per_epoch,
    train_val_positions,
)
from urbangeo.model import UrbanTokenizer, load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = TrainOptions(preset="tiny", image_size=32, epochs=2, batch_size=16, lr=2e-3,
                    checkpoint_every=2)


class Recorder:
    """A Progress that keeps what it was told and can stop the run like a Ctrl-C would."""

    def __init__(self, stop_at_step: int | None = None, stop_at_stage: str | None = None) -> None:
        self.stages: list[str] = []
        self.infos: list[str] = []
        self.steps = 0
        self.stop_at_step, self.stop_at_stage = stop_at_step, stop_at_stage
        self._training = False

    def start(self, stage: str, total: int | None, message: str = "") -> None:
        self.stages.append(stage)
        self._training = stage.startswith("epoch ")
        if stage == self.stop_at_stage:
            raise KeyboardInterrupt

    def advance(self, n: int = 1, message: str = "") -> None:
        if self._training and message != "resumed":  # count training steps only
            self.steps += n
        if self.steps == self.stop_at_step:
            raise KeyboardInterrupt

    def info(self, message: str) -> None:
        self.infos.append(message)

    def finish(self) -> None:
        pass




def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different[:5]}"


def test_training_lowers_the_loss_and_writes_the_model_contract(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    options = replace(FAST, epochs=3)
    report = train_model(data, tmp_path / "model", options)
    log = [json.loads(line) for line in
           (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and report.steps == log[-1]["step"]
    assert log[-1]["train"]["total"] < log[0]["train"]["total"]
    assert log[-1]["val"]["total"] < log[0]["val"]["total"]
    assert report.best_val_loss == min(r["val"]["total"] for r in log)
    assert (report.n_train, report.n_val) == (58, 6) and report.images_per_s > 0

    loaded = load_model(tmp_path / "model")
    assert loaded.model.config.image_size == 32 and loaded.model.config.preset == "tiny"
    assert loaded.extra["chips"]["tile_px"] == 64
    assert loaded.extra["indicators"]["population"] == "people"
    assert loaded.extra["grid"]["cell_size_m"] == 250 and loaded.extra["grid"]["crs"]
    assert loaded.extra["caption_column"] == "caption"
    assert loaded.extra["training"]["results"]["best_epoch"] == report.best_epoch
    tokenizer = UrbanTokenizer.load(tmp_path / "model")
    assert {**tokenizer.config, "file": "tokenizer.json"} == loaded.tokenizer
    assert tokenizer.vocab_size == loaded.model.config.vocab_size
    assert not (tmp_path / "model.partial").exists()
    assert any("validation loss" in line for line in report.lines())


def test_existing_model_needs_overwrite(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    options = replace(FAST, epochs=1)
    train_model(data, tmp_path / "model", options)
    with pytest.raises(InputError, match="already exists: pass --overwrite"):
        train_model(data, tmp_path / "model", replace(options, seed=1))
    before = _weights(tmp_path / "model")
    train_model(data, tmp_path / "model", replace(options, seed=1), overwrite=True)
    after = _weights(tmp_path / "model")
    assert not torch.equal(before["logit_scale"], after["logit_scale"]) or any(
        not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(("stop", "resumed_from"), [
    ({"stop_at_stage": "epoch 2/2"}, 4),  # the checkpoint at the first epoch's end (4 steps)
    ({"stop_at_step": 3}, 2),  # the checkpoint after step 2, in the middle of epoch 1
], ids=["at-epoch-end", "mid-epoch"])
def test_an_interrupted_run_resumes_to_the_same_weights(city_cells, tmp_path, stop,
                                                        resumed_from) -> None:
    data = load_cell_data(city_cells)
    train_model(data, tmp_path / "straight", FAST)
    with pytest.raises(KeyboardInterrupt):
        train_model(data, tmp_path / "resumed", FAST, progress=Recorder(**stop))
    assert (tmp_path / "resumed.partial").is_dir() and not (tmp_path / "resumed").exists()
    report = train_model(data, tmp_path / "resumed", FAST)
    assert report.resumed_from_step == resumed_from
    _assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    straight = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    resumed = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    assert straight == resumed


def test_resuming_with_other_options_is_refused(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    with pytest.raises(KeyboardInterrupt):
        train_model(data, tmp_path / "m", FAST, progress=Recorder(stop_at_step=3))
    with pytest.raises(InputError, match=r"unfinished training run.*lr: 0.002 -> 0.001.*"
                                         r"--overwrite"):
        train_model(data, tmp_path / "m", replace(FAST, lr=1e-3))
    # how a run goes (device, checkpoint spacing) may change; what it learns may not
    report = train_model(data, tmp_path / "m", replace(FAST, checkpoint_every=50, device="cpu"))
    assert report.resumed_from_step == 2
    with pytest.raises(KeyboardInterrupt):
        train_model(data, tmp_path / "m2", FAST, progress=Recorder(stop_at_step=3))
    report = train_model(data, tmp_path / "m2", replace(FAST, lr=1e-3), overwrite=True)
    assert report.resumed_from_step is None and report.lr == 1e-3


def test_grid_search_reports_every_trial_and_reruns_only_unfinished_ones(city_cells,
                                                                          tmp_path) -> None:
    data = load_cell_data(city_cells)
    options = replace(FAST, epochs=1)
    grid = {"lrs": (2e-3, 1e-5), "batch_sizes": (8, 16)}
    # interrupt the third trial, then rerun: the two finished trials are not trained again
    with pytest.raises(KeyboardInterrupt):
        grid_search(data, tmp_path / "m", options, **grid,
                    progress=Recorder(stop_at_step=8 + 4 + 2))  # batch 8: 8 steps, 16: 4
    rerun = Recorder()
    report = grid_search(data, tmp_path / "m", options, **grid, progress=rerun)
    assert rerun.stages.count("epoch 1/1") == 2
    assert [(t.lr, t.batch_size) for t in report.trials] == [(2e-3, 8), (2e-3, 16), (1e-5, 8),
                                                              (1e-5, 16)]
    best = min(report.trials, key=lambda t: t.best_val_loss)
    assert (report.lr, report.batch_size) == (best.lr, best.batch_size)
    assert sum("grid trial" in line for line in rerun.infos) == 4
    assert sum("<- chosen" in line for line in report.lines()) == 1
    assert not (tmp_path / "m.grid").exists()
    saved = load_model(tmp_path / "m").extra["training"]
    assert len(saved["results"]["trials"]) == 4 and saved["options"]["lr"] == report.lr
    assert (tmp_path / "m" / "tokenizer.json").is_file()


def test_shorter_grid_trials_then_train_the_best_pair_fully(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    report = grid_search(data, tmp_path / "m", FAST, lrs=(2e-3, 1e-5), trial_epochs=1)
    assert report.epochs == 2 and len(report.trials) == 2
    assert len((tmp_path / "m" / "train_log.jsonl").read_text().splitlines()) == 2


def test_ablation_options_reach_the_model(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    options = replace(FAST, epochs=1, lambda_lm=0.0, caption_column="caption_raw")
    report = train_model(data, tmp_path / "m", options)
    config = load_model(tmp_path / "m").model.config
    assert config.lambda_lm == 0.0 and config.lambda_con == 1.0
    assert report.train_loss["total"] == pytest.approx(report.train_loss["con"])
    assert load_model(tmp_path / "m").extra["caption_column"] == "caption_raw"
    # a model directory holds its tokenizer, so it can be reused as --tokenizer
    train_model(data, tmp_path / "m2", replace(options, tokenizer=str(tmp_path / "m")))
    assert (tmp_path / "m2" / "tokenizer.json").read_text() == \
        (tmp_path / "m" / "tokenizer.json").read_text()


def test_batches_and_flips_are_pure_functions_of_seed_epoch_position() -> None:
    batches = epoch_batches(33, 8, seed=5, epoch=2)
    assert len(batches) == steps_per_epoch(33, 8) == 4  # the lone 33rd cell waits
    assert sorted(np.concatenate(batches)) != list(range(33))
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(33, 8, 5, 2),
                                                    strict=True))
    assert not np.array_equal(batches[0], epoch_batches(33, 8, 5, 3)[0])
    assert steps_per_epoch(34, 8) == len(epoch_batches(34, 8, 0, 0)) == 5
    assert steps_per_epoch(5, 8) == 1
    train, val = train_val_positions(64, 0.1, seed=0)
    assert len(val) == 6 and not set(train) & set(val) and len(train) + len(val) == 64

    chips = np.random.default_rng(0).integers(0, 255, (16, 3, 8, 8), dtype=np.uint8)
    turned = augment(chips, seed=1, epoch=0, batch=3)
    assert np.array_equal(turned, augment(chips, seed=1, epoch=0, batch=3))
    assert not np.array_equal(turned, augment(chips, seed=1, epoch=0, batch=4))
    for chip, out in zip(chips, turned, strict=True):
        symmetries = [np.rot90(c, k, axes=(1, 2)) for c in (chip, chip[..., ::-1])
                      for k in range(4)]
        assert any(np.array_equal(out, s) for s in symmetries)


def test_bad_options_and_too_few_cells_are_explained(city_cells, tmp_path) -> None:
    with pytest.raises(InputError, match="batch_size must be at least 2"):
        TrainOptions(batch_size=1).validate()
    with pytest.raises(InputError, match="init_from needs the matching open_clip preset"):
        TrainOptions(preset="tiny", init_from="coca.pt").validate()
    with pytest.raises(InputError, match="preset must be one of"):
        TrainOptions(preset="huge").validate()
    with pytest.raises(InputError, match="--grid-epochs only applies to a grid search"):
        api.train(city_cells, tmp_path / "m", preset="tiny", grid_epochs=2)
    with pytest.raises(InputError, match="only 3 cells with a chip"):
        from urbangeo.geo.cells import read_cells, write_cells

        cf = read_cells(city_cells)
        cf.cells["has_chip"] = cf.cells.index < 3
        write_cells(city_cells, cf)
        api.train(city_cells, tmp_path / "m", preset="tiny")


def test_api_defaults_are_the_library_defaults() -> None:
    defaults = TrainOptions()
    params = inspect.signature(api.train).parameters
    shared = [name for name in params if hasattr(defaults, name)]
    assert len(shared) >= 12
    assert {n: params[n].default for n in shared} == {n: getattr(defaults, n) for n in shared}


def test_without_validation_cells_the_last_epoch_is_kept(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    options = replace(FAST, epochs=1, val_frac=0.0)
    report = train_model(data, tmp_path / "m", options)
    assert report.best_val_loss is None and report.n_val == 0 and report.n_train == 64
    assert report.best_epoch == 1 and "no validation cells" in " ".join(report.lines())
    with pytest.raises(InputError, match="grid search compares validation losses"):
        grid_search(data, tmp_path / "g", options, lrs=(1e-3, 1e-4))
