"""``urbangeo predict`` from the command line: a teaching --help, results on stdout, JSON
progress for the QGIS plugin, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyogrio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "learn"))  # shared test helpers
from test_embed import save_tiny_model  # noqa: E402

from urbangeo.cli.main import main  # noqa: E402


def _urbangeo(*args: str, progress: str = "none") -> int:
    try:
        main(["--progress", progress, *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_help_teaches_the_options(capsys) -> None:
    assert _urbangeo("predict", "--help") == 0
    out = capsys.readouterr().out
    for needle in ("--model", "--target", "--raster-dir", "--split", "blocks", "NULL",
                   "log1p", "embeddings", "Examples"):
        assert needle in out


def test_predict_prints_metrics_and_writes_outputs(city_cells, tmp_path, capsys) -> None:
    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "pred.gpkg"
    code = _urbangeo("predict", city_cells, "--model", model, "--target", "population",
                     "--target", "gdp", "-o", out, "--raster-dir", tmp_path / "r",
                     "--split", "blocks", "--seed", "3", "--device", "cpu")
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("64 of 64 cells predicted") and "blocks split, seed 3" in lines[0]
    assert lines[1].startswith("population [people]: test R²")
    assert lines[-1] == f"-> {tmp_path / 'r' / 'gdp_pred.tif'}"
    assert {"population_pred", "gdp_pred"} <= set(pyogrio.read_dataframe(out,
                                                                       layer="predictions"))
    code = _urbangeo("predict", city_cells, "--model", model, "--target", "gdp", "-o", out,
                     "--overwrite", progress="json")
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and {"embed", "probe"} <= {r["stage"] for r in records}
    assert any(r["type"] == "info" and "test R²" in r["message"] for r in records)


def test_errors_are_one_line(city_cells, tmp_path, capsys) -> None:
    model = save_tiny_model(tmp_path / "model")
    cases = [
        (["--model", tmp_path / "nope", "--target", "gdp"], "model directory"),
        (["--model", model, "--target", "income"], "no indicator 'income'"),
        (["--model", model, "--target", "gdp", "--device", "tpu9"], "unknown device 'tpu9'"),
    ]
    for args, message in cases:
        code = _urbangeo("predict", city_cells, *args, "-o", tmp_path / "p.gpkg")
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _urbangeo("predict", city_cells, "-o", tmp_path / "p.gpkg") == 2
    assert "Missing option '--model'" in capsys.readouterr().err
