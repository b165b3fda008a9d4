"""The evaluation's outputs: a long CSV of every probe, a Markdown table like the paper's
Table 2, and a bar chart of R².

All three are written from the same per-seed results through :func:`summarize`, so the table,
the chart and a mean a reader recomputes from the CSV cannot disagree. Every file is written
atomically: a killed evaluation never leaves a half table behind.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from urbangeo._atomic import atomic_path, write_text_atomic

METRICS = ("r2", "rmse", "mae")
METRIC_NAMES = {"r2": "R²", "rmse": "RMSE", "mae": "MAE"}
DECIMALS = 3
"""Decimals of every number in the Markdown table (the CSV keeps full precision)."""


@dataclass(frozen=True)
class ProbeResult:
    """One probe: a model's features, one indicator, one split kind and seed, on the test cells."""

    model: str
    indicator: str
    split: str
    seed: int
    r2: float
    rmse: float
    mae: float
    n_test: int


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1; NaN with one seed) of each metric over
    the seeds of one model, indicator and split kind."""

    model: str
    indicator: str
    split: str
    n_seeds: int
    mean: dict[str, float]
    std: dict[str, float]


def summarize(results: Sequence[ProbeResult]) -> list[Summary]:
    """Aggregate per-seed results over seeds, keeping the order models/indicators first appear."""
    groups: dict[tuple[str, str, str], list[ProbeResult]] = {}
    for r in results:
        groups.setdefault((r.model, r.indicator, r.split), []).append(r)
    out = []
    for (model, indicator, split), rows in groups.items():
        values = {m: np.array([getattr(r, m) for r in rows], dtype=np.float64) for m in METRICS}
        out.append(Summary(
            model, indicator, split, len(rows),
            mean={m: float(np.mean(v)) for m, v in values.items()},
            std={m: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
                 for m, v in values.items()}))
    return out


def write_csv(path: Path, results: Sequence[ProbeResult]) -> None:
    """Long format, one row per probe: model, indicator, split, seed, r2, rmse, mae, n_test."""
    names = [f.name for f in fields(ProbeResult)]
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for r in results:
            writer.writerow({k: repr(v) if isinstance(v, float) else v
                             for k, v in asdict(r).items()})


def read_csv(path: Path) -> list[ProbeResult]:
    """The probes of a CSV written by :func:`write_csv` (for scripts and resumed reports)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [ProbeResult(row["model"], row["indicator"], row["split"], int(row["seed"]),
                            float(row["r2"]), float(row["rmse"]), float(row["mae"]),
                            int(row["n_test"]))
                for row in csv.DictReader(fh)]


def sample_name(cells_path: Path) -> str:
    """A cells file's short name in reports: its stem, or its folder's name when the stem is
    the generic "cells" (``beijing/cells.gpkg`` -> ``beijing``)."""
    path = Path(cells_path)
    return path.parent.name if path.stem == "cells" and path.parent.name else path.stem


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{DECIMALS}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{DECIMALS}f}"


def markdown_table(summaries: Sequence[Summary], split: str, labels: dict[str, str]) -> str:
    """One Markdown table of ``split``: a row per model, R² / RMSE / MAE per indicator, the best
    mean R² of each indicator in bold (ties all bold)."""
    rows = [s for s in summaries if s.split == split]
    models = list(dict.fromkeys(s.model for s in rows))
    indicators = list(dict.fromkeys(s.indicator for s in rows))
    by_key = {(s.model, s.indicator): s for s in rows}
    best = {}
    for ind in indicators:
        r2s = [round(by_key[m, ind].mean["r2"], DECIMALS) for m in models if (m, ind) in by_key]
        r2s = [v for v in r2s if not math.isnan(v)]
        best[ind] = max(r2s) if r2s else math.nan
    head = ["model", *(f"{ind} {METRIC_NAMES[m]}" for ind in indicators for m in METRICS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in models:
        cells = [labels.get(model, model)]
        for ind in indicators:
            s = by_key.get((model, ind))
            for m in METRICS:
                if s is None:
                    cells.append("")
                    continue
                text = _cell(s.mean[m], s.std[m])
                if m == "r2" and round(s.mean[m], DECIMALS) == best[ind]:
                    text = f"**{text}**"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, summaries: Sequence[Summary], *, title: str,
                   header: Sequence[str], split_titles: dict[str, str],
                   labels: dict[str, str]) -> None:
    """The report: a title, the header paragraph (what was measured and how), one table per
    split kind in ``split_titles`` order."""
    parts = [f"# {title}", "", *header, ""]
    for split, split_title in split_titles.items():
        if any(s.split == split for s in summaries):
            parts += [f"## {split_title}", "", markdown_table(summaries, split, labels), ""]
    write_text_atomic(path, "\n".join(parts))


def write_r2_plot(path: Path, summaries: Sequence[Summary], *, split_titles: dict[str, str],
                  labels: dict[str, str], title: str) -> None:
    """Grouped bars of mean R² (model bars within each indicator group) with ± std error bars,
    one panel per split kind, stacked (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in split_titles if any(x.split == s for x in summaries)]
    models = list(dict.fromkeys(s.model for s in summaries))
    indicators = list(dict.fromkeys(s.indicator for s in summaries))
    by_key = {(s.split, s.model, s.indicator): s for s in summaries}
    width = 0.8 / max(len(models), 1)
    panel_width = max(5.0, 1.5 + 0.2 * len(models) * len(indicators))
    fig, axes = plt.subplots(len(splits), 1, figsize=(panel_width + 2.5, 3.2 * len(splits) + 0.8),
                             squeeze=False, sharey=True)
    colours = plt.get_cmap("tab20")  # pairs of a dark and a light shade per hue
    for ax, split in zip(axes[:, 0], splits, strict=True):
        for j, model in enumerate(models):
            found = [by_key.get((split, model, ind)) for ind in indicators]
            means = [s.mean["r2"] if s else np.nan for s in found]
            errs = [0.0 if s is None or math.isnan(s.std["r2"]) else s.std["r2"] for s in found]
            ax.bar(np.arange(len(indicators)) + (j - (len(models) - 1) / 2) * width, means, width,
                   yerr=errs, capsize=2, label=labels.get(model, model), color=colours(_hue(j)))
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(np.arange(len(indicators)), indicators)
        ax.set_title(split_titles[split])
        ax.set_ylabel("test R² (mean ± std)")
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _hue(j: int) -> int:
    """tab20 index of the j-th bar: the ten dark shades first, then the light ones."""
    return (2 * j) % 20 + (j // 10) % 2
