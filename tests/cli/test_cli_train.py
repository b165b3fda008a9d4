"""``urbangeo train`` through the real CLI entry point on a small synthetic city."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_city_cells

from urbangeo import api
from urbangeo.cli.main import main
from urbangeo.model import load_model
from urbangeo.sample import make_synthetic_city

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--preset", "tiny", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
        "--lr", "2e-3"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.5 km synthetic city in 250 m cells (36 cells) with chips and captions."""
    return build_city_cells(tmp_path_factory.mktemp("train_city"), seed=4, size_km=1.5)




def _urbangeo(*args: str) -> int:
    try:
        main([*map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_help_teaches_resume_ablations_and_grid_search(capsys) -> None:
    assert _urbangeo("train", "--help") == 0
    out = " ".join(capsys.readouterr().out.split())  # click rewraps paragraphs
    for needle in ("MODEL_DIR.partial", "kill -9", "--overwrite", "--grid-lr", "--lambda-lm 0",
                   "caption_raw", "--init-from", "Examples"):
        assert needle in out


def test_train_writes_a_model_and_refuses_to_overwrite_it(cells, tmp_path, capsys) -> None:
    model = tmp_path / "model"
    assert _urbangeo("--progress", "json", "train", cells, "-o", model, *FAST) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(r["stage"] == "epoch 1/1" and r["type"] == "progress" and "img/s" in r["message"]
               for r in records)
    assert any(r["type"] == "info" and f"-> {model}" in r["message"] for r in records)
    assert load_model(model).extra["chips"]["tile_px"] == 64

    assert _urbangeo("--progress", "none", "train", cells, "-o", model, *FAST) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    assert _urbangeo("--progress", "none", "train", cells, "-o", model, *FAST, "--overwrite",
                     "--seed", "3") == 0
    assert load_model(model).extra["training"]["options"]["seed"] == 3


def test_grid_search_prints_every_trial(cells, tmp_path, capsys) -> None:
    code = _urbangeo("--progress", "none", "train", cells, "-o", tmp_path / "m", *FAST,
                     "--grid-lr", "2e-3, 1e-5", "--grid-batch-size", "8")
    out = capsys.readouterr().out
    assert code == 0, out
    trials = [line for line in out.splitlines() if line.startswith("grid trial")]
    assert len(trials) == 2 and sum("<- chosen" in line for line in trials) == 1


def test_bad_grid_values_and_missing_captions_are_one_line_errors(cells, tmp_path,
                                                                   capsys) -> None:
    assert _urbangeo("train", cells, "-o", tmp_path / "m", "--grid-lr", "1e-3,fast") == 2
    assert "'fast' is not a number" in capsys.readouterr().err
    bare = tmp_path / "bare.gpkg"
    city = make_synthetic_city(tmp_path / "sample", seed=4, size_km=1)
    api.grid(city.aoi, output=bare, cell_size=250)
    assert _urbangeo("train", bare, "-o", tmp_path / "m", *FAST) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "urbangeo chips" in err and "Traceback" not in err


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train", interrupted)
    assert _urbangeo("train", tmp_path / "cells.gpkg", "-o", tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'm'}.partial" in err and "same command again to resume" in err
