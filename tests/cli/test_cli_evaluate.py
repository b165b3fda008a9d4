"""``urbangeo evaluate`` and ``urbangeo similar`` through the real CLI entry point."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from urbangeo.cli.main import main
from urbangeo.learn.data import load_cell_data
from urbangeo.learn.evaluate import MODEL_KEYS


def _urbangeo(*args: object) -> int:
    try:
        main(["--progress", "none", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_help_lists_every_model_and_the_transfer_test(capsys) -> None:
    assert _urbangeo("evaluate", "--help") == 0
    # undo click's line wrapping, which also breaks lines after hyphens
    out = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    for key in MODEL_KEYS:
        assert key in out
    for needle in ("--train-on", "--test-on", "--model MODEL_DIR", "resumes", "Examples"):
        assert needle in out
    assert _urbangeo("similar", "--help") == 0
    assert "--other-files-only" in capsys.readouterr().out


def test_evaluate_writes_the_report_and_prints_the_table(city_cells: Path, tmp_path: Path,
                                                         capsys) -> None:
    out = tmp_path / "evaluation"
    code = _urbangeo("evaluate", city_cells, "-o", out, "--models", "pca,text-only",
                     "--target", "population", "--seeds", "2", "--split", "random",
                     "--epochs", "1")
    assert code == 0
    printed = capsys.readouterr().out
    assert "random: test R²" in printed and "PCA" in printed and "Text only" in printed
    assert f"-> {out / 'evaluation.md'}" in printed
    with (out / "evaluation.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["model"], r["split"], r["indicator"]) for r in rows} == {
        ("pca", "random", "population"), ("text-only", "random", "population")}
    assert len(rows) == 4

    assert _urbangeo("evaluate", city_cells, "-o", out, "--models", "pca,text-only",
                     "--target", "population", "--seeds", "2", "--split", "random",
                     "--epochs", "1") == 0
    assert "reused saved features: pca, text-only" in capsys.readouterr().out


def test_transfer_from_the_command_line(city_cells: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "transfer"
    assert _urbangeo("evaluate", "--train-on", city_cells, "--test-on", city_cells, "-o", out,
                     "--models", "text-only", "--target", "gdp", "--seeds", "1") == 0
    assert "transfer: test R²" in capsys.readouterr().out
    with (out / "evaluation.csv").open() as fh:
        (row,) = csv.DictReader(fh)
    assert (row["split"], row["n_test"]) == ("transfer", "64")  # scored on every cell


@pytest.mark.parametrize(("args", "message"), [
    (["--models", "pca,simclr"], "unknown model(s) simclr"),
    (["--train-on", "{cells}"], "needs both --train-on and --test-on"),
    (["--train-on", "{cells}", "--test-on", "{cells}"], "not both"),
    (["--target", "income"], "no indicator 'income'"),
])
def test_evaluate_mistakes_are_one_line_errors(city_cells: Path, tmp_path: Path, capsys,
                                               args: list[str], message: str) -> None:
    args = [a.format(cells=city_cells) for a in args]
    assert _urbangeo("evaluate", city_cells, "-o", tmp_path / "ev", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_similar_prints_matches_and_writes_a_layer(city_cells: Path, tmp_path: Path,
                                                   capsys) -> None:
    import torch

    from urbangeo.model import UrbanCLIP, UrbanCLIPConfig, save_model

    torch.manual_seed(0)
    model = save_model(tmp_path / "model", UrbanCLIP(UrbanCLIPConfig.from_preset("tiny")))
    cell = load_cell_data(city_cells).cell_ids[0]
    out = tmp_path / "similar.gpkg"
    assert _urbangeo("similar", city_cells, "--model", model, "--cell", cell, "-k", "3",
                     "-o", out) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"query {cell}") and "  3. cosine " in printed
    assert out.exists()
    assert _urbangeo("similar", city_cells, "--model", model, "--cell", cell, "-o", out) == 2
    assert "already exists" in capsys.readouterr().err
    assert _urbangeo("similar", city_cells, "--model", model, "--cell", "nope") == 2
    assert "no cell 'nope'" in capsys.readouterr().err
