"""The demo: the whole pipeline on a generated synthetic city, offline, in a few minutes.

It is a list of steps (:data:`STEPS`); each takes the shared :class:`DemoRun`, runs one stage
through :mod:`urbangeo.api` (exactly what the commands do) and returns its summary lines:
sample -> grid + indicators -> chips -> caption -> rasterize -> train -> predict -> evaluate.
Run it with ``urbangeo demo`` or :func:`urbangeo.api.demo`.

The 6 km city is cut into 250 m cells (576 of them) rather than the usual 1 km, so the
60/20/20 split leaves over a hundred test cells; a 250 m cell is 64 imagery pixels, so 64 px
chips keep every pixel and match the ``tiny`` model's input.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from urbangeo import api
from urbangeo.errors import InputError
from urbangeo.geo.cells import CellsFile
from urbangeo.progress import SILENT, Progress
from urbangeo.sample import SampleCity, make_synthetic_city
from urbangeo.sample.synthetic_city import INDICATORS

LABEL = 11
"""Width of the step names in the printed lines."""
CELL_M = 250.0
TILE_PX = 64
PRESET = "tiny"
EPOCHS = 10
"""Pretraining epochs of the demo's UrbanCLIP and of each ablation (same budget for all)."""


@dataclass
class DemoRun:
    """State handed from step to step; ``lines`` is everything the demo reported."""

    out_dir: Path
    seed: int
    overwrite: bool
    progress: Progress = SILENT
    sample: SampleCity | None = None
    cells: CellsFile | None = None
    epochs: int = EPOCHS
    eval_seeds: int = 3
    eval_models: tuple[str, ...] | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def cells_path(self) -> Path:
        return self.out_dir / "cells.gpkg"

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"


def _sample(run: DemoRun) -> list[str]:
    run.sample = make_synthetic_city(run.out_dir / "sample", seed=run.seed, progress=run.progress)
    return [f"synthetic city (seed {run.seed}) -> {run.sample.out_dir}"]


def _grid(run: DemoRun) -> list[str]:
    """Grid and indicators in one call (``urbangeo grid --indicator ...``), styled on population."""
    assert run.sample is not None
    result = api.grid(run.sample.aoi, output=run.cells_path, cell_size=CELL_M,
                      indicators=run.sample.indicator_specs, style_column="population",
                      overwrite=run.overwrite, progress=run.progress)
    run.cells = result.cells
    return result.lines()


def _chips(run: DemoRun) -> list[str]:
    assert run.sample is not None
    result = api.chips(run.cells_path, run.sample.imagery, tile_px=TILE_PX, nir_band=4,
                       overwrite=run.overwrite, progress=run.progress)
    run.cells = result.cells
    return result.lines()


def _caption(run: DemoRun) -> list[str]:
    result = api.caption(run.cells_path, "describe", recaption=run.overwrite,
                         progress=run.progress)
    result.raise_for_failures()
    run.cells = result.cells
    return result.lines()


def _rasterize(run: DemoRun) -> list[str]:
    # The demo owns its folder; the cells file was already checked before any step ran.
    result = api.rasterize(run.cells_path, ["population"], run.out_dir / "population.tif",
                           overwrite=True, progress=run.progress)
    return [f"population per cell as a COG -> {result.path}"]


def _train(run: DemoRun) -> list[str]:
    result = api.train(run.cells_path, run.model_dir, preset=PRESET, epochs=run.epochs,
                       seed=run.seed, overwrite=run.overwrite, progress=run.progress)
    return result.lines()


def _predict(run: DemoRun) -> list[str]:
    result = api.predict(run.cells_path, run.model_dir, list(INDICATORS),
                         run.out_dir / "predictions.gpkg",
                         raster_dir=run.out_dir / "predictions", seed=run.seed,
                         overwrite=run.overwrite, progress=run.progress)
    return result.lines()


def _evaluate(run: DemoRun) -> list[str]:
    """Table 2 and the ablations; the UrbanCLIP row reuses the model the train step made."""
    report = api.evaluate(run.cells_path, run.out_dir / "evaluation", model=run.model_dir,
                          models=run.eval_models, preset=PRESET, epochs=run.epochs,
                          seeds=run.eval_seeds, device="cpu", overwrite=run.overwrite,
                          progress=run.progress)
    return report.lines()


Step = tuple[str, Callable[[DemoRun], list[str]]]
STEPS: list[Step] = [
    ("sample", _sample),
    ("grid", _grid),
    ("chips", _chips),
    ("caption", _caption),
    ("rasterize", _rasterize),
    ("train", _train),
    ("predict", _predict),
    ("evaluate", _evaluate),
]


def _table(cells: CellsFile, columns: list[str], rows: int = 5) -> list[str]:
    """The ``rows`` most populated cells, as aligned text."""
    top = cells.cells.sort_values(columns[0], ascending=False).head(rows)
    width = max(len("cell_id"), *(len(str(c)) for c in top["cell_id"]))
    lines = ["  ".join([f"{'cell_id':<{width}}", *(f"{c:>12}" for c in columns)])]
    for _, row in top.iterrows():
        lines.append("  ".join([f"{row['cell_id']:<{width}}",
                                *(f"{row[c]:>12,.1f}" for c in columns)]))
    return lines


def _example_captions(cells: CellsFile) -> list[str]:
    """The refined captions of the most and the least populated captioned cells."""
    captioned = cells.cells[cells.cells["caption"].notna()].sort_values("population")
    if captioned.empty:
        return []
    lines = ["captions of the most and the least populated cells:"]
    for _, row in captioned.iloc[[-1, 0]].iterrows():
        lines.append(f"  {row['cell_id']} ({row['population']:,.0f} people):")
        lines += textwrap.wrap(row["caption"], width=96, initial_indent="    ",
                               subsequent_indent="    ")
    return lines


def run_demo(out_dir: Path, *, seed: int = 0, overwrite: bool = False, epochs: int = EPOCHS,
             eval_seeds: int = 3, eval_models: Sequence[str] | None = None,
             progress: Progress = SILENT, say: Callable[[str], None] | None = None) -> DemoRun:
    """Run every step of :data:`STEPS`, passing each summary line to ``say`` as it comes.

    ``epochs``, ``eval_seeds`` and ``eval_models`` trade the evaluation's depth for time (the
    tests run a one-epoch demo)."""
    run = DemoRun(out_dir=out_dir, seed=seed, overwrite=overwrite, progress=progress,
                  epochs=epochs, eval_seeds=eval_seeds,
                  eval_models=None if eval_models is None else tuple(eval_models))
    if run.cells_path.exists() and not overwrite:
        raise InputError(f"{run.cells_path} already exists: pass --overwrite to redo the demo, "
                         "or choose another -o")

    def report(line: str) -> None:
        run.lines.append(line)
        if say is not None:
            say(line)

    started = time.perf_counter()
    for name, step in STEPS:
        first, *rest = step(run)
        report(f"{name:>{LABEL}}: {first}")
        for line in rest:
            report(f"{'':>{LABEL}}  {line}")
    report(f"done in {time.perf_counter() - started:.1f} s. Open in QGIS: {run.cells_path} "
           f"(styled on population), {run.out_dir / 'predictions.gpkg'} and the COGs in "
           f"{run.out_dir / 'predictions'}; the table and chart are in "
           f"{run.out_dir / 'evaluation'}")
    if run.cells is not None:
        indicators = [name for name in INDICATORS if name in run.cells.cells.columns]
        if indicators:
            report("most populated cells:")
            for line in _table(run.cells, indicators):
                report(line)
        if "caption" in run.cells.cells.columns and "population" in indicators:
            for line in _example_captions(run.cells):
                report(line)
    return run
