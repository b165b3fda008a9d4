"""The evaluation harness end to end on the 64-cell fixture city: the three output files agree
with each other and with numpy, a rerun or a killed run does not refit finished models, and
the transfer test runs between two cities."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import build_city_cells
from PIL import Image

from urbangeo.errors import InputError
from urbangeo.learn import evaluate as ev
from urbangeo.learn.data import load_cell_data
from urbangeo.learn.evaluate import EvalOptions, evaluate, evaluate_transfer
from urbangeo.learn.probe import ProbeOptions

FAST = dict(seeds=2, epochs=1, batch_size=16, probe=ProbeOptions(max_epochs=60, patience=10))
MODELS = ("pca", "text-only", "urbanclip")


@pytest.fixture(scope="module")
def run(_city_cells: Path, tmp_path_factory: pytest.TempPathFactory) -> ev.EvalReport:
    """One evaluation of three rows (an image baseline, the text baseline, UrbanCLIP)."""
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate(load_cell_data(_city_cells), out, EvalOptions(models=MODELS, **FAST))


@pytest.fixture(scope="module")
def second_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another 2 km synthetic city (another seed, hence other streets and indicators)."""
    return build_city_cells(tmp_path_factory.mktemp("other_city"), seed=11,
                            name="othertown.gpkg")


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _tables(markdown: str) -> dict[str, dict[str, list[str]]]:
    """section title -> row label -> cells, from the report's Markdown tables."""
    tables: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            section = line[3:]
            tables[section] = {}
        elif line.startswith("| ") and section and not line.startswith("| model"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[section][cells[0]] = cells[1:]
    return tables


def test_table_csv_and_plot_agree(run: ev.EvalReport) -> None:
    rows = _csv(run.out_dir / "evaluation.csv")
    order = list(dict.fromkeys(r["indicator"] for r in rows))  # the table's column order
    assert sorted(order) == ["carbon", "gdp", "population"]
    assert len(rows) == len(MODELS) * len(order) * 2 * 2  # models x indicators x splits x seeds
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert all(int(r["n_test"]) > 0 for r in rows)
    tables = _tables((run.out_dir / "evaluation.md").read_text())
    titles = {"random": ev.SPLIT_TITLES["random"], "blocks": ev.SPLIT_TITLES["blocks"]}
    assert set(tables) == set(titles.values())
    for split, title in titles.items():
        table = tables[title]
        assert list(table) == [run.labels[m] for m in MODELS]
        best = {}
        for model in MODELS:
            cells = table[run.labels[model]]
            for i, ind in enumerate(order):
                for j, metric in enumerate(("r2", "rmse", "mae")):
                    values = [float(r[metric]) for r in rows
                              if (r["model"], r["indicator"], r["split"]) == (model, ind, split)]
                    assert len(values) == 2
                    expected = f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
                    assert cells[3 * i + j].strip("*") == expected
                    if metric == "r2":
                        best.setdefault(ind, []).append((round(np.mean(values), 3), model))
        for i, ind in enumerate(order):
            top = max(best[ind])[0]
            for value, model in best[ind]:
                assert table[run.labels[model]][3 * i].startswith("**") == (value == top)
    with Image.open(run.out_dir / "evaluation_r2.png") as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_header_is_honest_about_the_sample(run: ev.EvalReport) -> None:
    text = (run.out_dir / "evaluation.md").read_text()
    assert "64 cells with a chip" in text
    assert "**Synthetic data**" in text
    assert "over 2 seed(s)" in text and "ddof=1" in text
    assert "log1p" in text
    lines = run.lines()
    assert any(line.startswith("  UrbanCLIP ") for line in lines)
    assert set(run.fit_seconds) == set(MODELS) and not run.reused


def test_rerun_reuses_every_fitted_model(run: ev.EvalReport, _city_cells: Path) -> None:
    features = sorted((run.out_dir / "features").glob("*.npy"))
    assert len(features) == len(MODELS)
    assert len(list((run.out_dir / "models").iterdir())) == 1  # the UrbanCLIP checkpoint
    before = {p: p.stat().st_mtime_ns for p in features}
    again = evaluate(load_cell_data(_city_cells), run.out_dir, EvalOptions(models=MODELS, **FAST))
    assert {p: p.stat().st_mtime_ns for p in features} == before
    assert again.reused == list(MODELS) and not again.fit_seconds
    assert again.results == run.results  # same features, seeded probes: same numbers


def test_killed_evaluation_resumes_without_refitting(city_cells: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_cell_data(city_cells)
    options = EvalOptions(models=("pca", "text-only"), targets=("population",),
                          splits=("random",), **FAST)
    fits: list[str] = []
    real = ev.cached_features

    def killed_at_text(extractor, *args, **kwargs):
        if extractor.key == "text-only":
            raise KeyboardInterrupt
        fits.append(extractor.key)
        return real(extractor, *args, **kwargs)

    monkeypatch.setattr(ev, "cached_features", killed_at_text)
    with pytest.raises(KeyboardInterrupt):
        evaluate(data, tmp_path, options)
    assert fits == ["pca"] and not (tmp_path / "evaluation.md").exists()
    monkeypatch.undo()
    resumed = evaluate(data, tmp_path, options)
    assert resumed.reused == ["pca"] and list(resumed.fit_seconds) == ["text-only"]
    fresh = evaluate(data, tmp_path, options, overwrite=True)
    assert not fresh.reused and fresh.results == resumed.results


def test_ablations_train_with_their_changed_option() -> None:
    options = EvalOptions(epochs=2, preset="tiny")
    same = {"caption": ["a road", "a park"], "caption_raw": ["a road", "a park"]}
    extractors = {key: ev._extractor(key, 0, options, 64, "cpu", Path("m"), "data", same)
                  for key in ("urbanclip", "urbanclip-no-lm", "urbanclip-no-con",
                              "urbanclip-raw-text")}
    trains = {key: e.train for key, e in extractors.items()}
    assert (trains["urbanclip"].lambda_lm, trains["urbanclip"].lambda_con) == (1.0, 1.0)
    assert trains["urbanclip-no-lm"].lambda_lm == 0.0
    assert trains["urbanclip-no-con"].lambda_con == 0.0
    assert trains["urbanclip-raw-text"].caption_column == "caption_raw"
    assert all(t.epochs == 2 and t.preset == "tiny" for t in trains.values())
    dirs = {key: e.model_dir for key, e in extractors.items()}
    assert len(set(dirs.values())) == 3  # refinement changed nothing: raw text = UrbanCLIP
    assert dirs["urbanclip-raw-text"] == dirs["urbanclip"]
    refined = {**same, "caption": ["a road", "a green park"]}
    raw = ev._extractor("urbanclip-raw-text", 0, options, 64, "cpu", Path("m"), "data", refined)
    assert raw.model_dir != ev._extractor("urbanclip", 0, options, 64, "cpu", Path("m"), "data",
                                          refined).model_dir


def test_options_refuse_unknown_models_splits_and_targets(city_cells: Path,
                                                          tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown model.*simclr.*choose from.*pg-simclr"):
        EvalOptions(models=("simclr",)).checked()
    with pytest.raises(InputError, match="split kinds"):
        EvalOptions(splits=("kfold",)).checked()
    with pytest.raises(InputError, match="add urbanclip to --models"):
        EvalOptions(models=("pca",), model_dir=Path("m")).checked()
    with pytest.raises(InputError, match="no indicator 'income'.*population"):
        evaluate(load_cell_data(city_cells), tmp_path / "out",
                 EvalOptions(models=("pca",), targets=("income",)))
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_transfer_between_two_cities_with_a_given_model(run: ev.EvalReport, city_cells: Path,
                                                        second_city: Path,
                                                        tmp_path: Path) -> None:
    (model_dir,) = (run.out_dir / "models").iterdir()
    given = tmp_path / "trained_model"
    shutil.copytree(model_dir, given)
    source, target = load_cell_data(city_cells), load_cell_data(second_city)
    report = evaluate_transfer(source, target, tmp_path / "transfer",
                               EvalOptions(models=("pca", "urbanclip"), model_dir=given,
                                           targets=("population", "carbon"), **FAST))
    rows = _csv(report.out_dir / "evaluation.csv")
    assert len(rows) == 2 * 2 * 2
    assert {r["split"] for r in rows} == {"transfer"}
    labelled = int(np.isfinite(target.target("population")).sum())
    assert {int(r["n_test"]) for r in rows if r["indicator"] == "population"} == {labelled}
    assert report.labels["urbanclip"] == "UrbanCLIP (trained_model)"
    assert not (report.out_dir / "models").exists()  # the given model was not retrained
    text = (report.out_dir / "evaluation.md").read_text()
    name = city_cells.parent.name
    assert f"transfer {name} -> othertown" in text
    # a user's own model is embedded through the cache predict and similar share
    assert (city_cells.parent / "cells.embeddings").is_dir()
    assert re.search(r"fit on \S+ only", text)
    # features of both cities are saved per fitted model, so a rerun refits nothing
    assert len(list((report.out_dir / "features").glob("*.npy"))) == 4
    again = evaluate_transfer(source, target, tmp_path / "transfer",
                              EvalOptions(models=("pca", "urbanclip"), model_dir=given,
                                          targets=("population", "carbon"), **FAST))
    assert again.reused == ["pca", "urbanclip"] and again.results == report.results


def test_pretrain_per_seed_fits_each_seed_once(city_cells: Path, tmp_path: Path) -> None:
    report = evaluate(load_cell_data(city_cells), tmp_path,
                      EvalOptions(models=("pca",), targets=("carbon",), splits=("random",),
                                  pretrain_per_seed=True, **FAST))
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "features").glob("*.npy")) == [
        "seed0", "seed1"]
    assert [(r.seed, r.split) for r in report.results] == [(0, "random"), (1, "random")]
    assert "each model pretrained again with every seed" in (tmp_path / "evaluation.md").read_text()
