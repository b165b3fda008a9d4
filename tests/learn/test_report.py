"""The evaluation's files from known per-seed results: aggregation, CSV, Markdown and PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from urbangeo.learn import report
from urbangeo.learn.report import ProbeResult


def _results(seed: int = 0) -> list[ProbeResult]:
    rng = np.random.default_rng(seed)
    rows = []
    for model in ("pca", "urbanclip"):
        for indicator in ("population", "gdp"):
            for split in ("random", "blocks"):
                for s in range(3):
                    r2, rmse, mae = rng.uniform(-0.5, 1.0), rng.uniform(0.1, 2), rng.uniform(0.1, 1)
                    rows.append(ProbeResult(model, indicator, split, s, r2, rmse, mae, 12 + s))
    return rows


def test_summary_is_mean_and_sample_std_over_seeds() -> None:
    results = _results()
    summaries = report.summarize(results)
    assert len(summaries) == 2 * 2 * 2
    for s in summaries:
        rows = [r for r in results if (r.model, r.indicator, r.split) == (s.model, s.indicator,
                                                                          s.split)]
        assert s.n_seeds == len(rows) == 3
        for metric in report.METRICS:
            values = [getattr(r, metric) for r in rows]
            assert s.mean[metric] == pytest.approx(np.mean(values))
            assert s.std[metric] == pytest.approx(np.std(values, ddof=1))


def test_one_seed_has_no_spread_and_the_table_shows_none() -> None:
    one = [ProbeResult("pca", "gdp", "random", 0, 0.5, 1.0, 0.8, 10)]
    (s,) = report.summarize(one)
    assert math.isnan(s.std["r2"])
    table = report.markdown_table([s], "random", {"pca": "PCA"})
    assert "| PCA | **0.500** | 1.000 | 0.800 |" in table
    assert "±" not in table


def test_csv_round_trips_at_full_precision(tmp_path: Path) -> None:
    results = _results(1)
    path = tmp_path / "evaluation.csv"
    report.write_csv(path, results)
    assert path.read_text().splitlines()[0] == "model,indicator,split,seed,r2,rmse,mae,n_test"
    assert report.read_csv(path) == results


def test_markdown_bolds_the_best_mean_r2_of_each_indicator(tmp_path: Path) -> None:
    results = [ProbeResult("a", "pop", "random", s, r2, 1.0, 1.0, 10)
               for s, r2 in enumerate((0.2, 0.4))]
    results += [ProbeResult("b", "pop", "random", s, r2, 2.0, 2.0, 10)
                for s, r2 in enumerate((0.6, 0.1))]  # means: A 0.30, B 0.35 (best)
    results += [ProbeResult("a", "gdp", "random", s, math.nan, math.nan, math.nan, 0)
                for s in range(2)]
    summaries = report.summarize(results)
    path = tmp_path / "evaluation.md"
    report.write_markdown(path, summaries, title="T", header=["- header line"],
                          split_titles={"random": "Random", "blocks": "Blocks"},
                          labels={"a": "Model A", "b": "Model B"})
    text = path.read_text()
    assert text.startswith("# T\n\n- header line\n")
    assert "## Random" in text and "## Blocks" not in text  # no results, no section
    row_a = next(line for line in text.splitlines() if line.startswith("| Model A"))
    row_b = next(line for line in text.splitlines() if line.startswith("| Model B"))
    assert "| 0.300 ± 0.141 |" in row_a and "**" not in row_a.split("|")[2]
    assert "**0.350 ± 0.354**" in row_b
    assert row_a.endswith("| n/a | n/a | n/a |")  # gdp undefined for A, absent for B
    assert row_b.endswith("|  |  |  |")


def test_plot_is_a_png_with_one_panel_per_split(tmp_path: Path) -> None:
    summaries = report.summarize(_results())
    path = tmp_path / "evaluation_r2.png"
    report.write_r2_plot(path, summaries, split_titles={"random": "R", "blocks": "B"},
                         labels={}, title="t")
    with Image.open(path) as image:
        assert image.format == "PNG"
        tall = image.size[1]
    report.write_r2_plot(path, [s for s in summaries if s.split == "random"],
                         split_titles={"random": "R", "blocks": "B"}, labels={}, title="t")
    with Image.open(path) as image:
        assert image.size[1] < tall
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_sample_name_prefers_the_folder_of_a_generic_cells_file() -> None:
    assert report.sample_name(Path("/x/beijing/cells.gpkg")) == "beijing"
    assert report.sample_name(Path("/x/beijing/shanghai.gpkg")) == "shanghai"
