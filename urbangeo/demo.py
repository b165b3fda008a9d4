"""The demo: the whole pipeline on a generated synthetic city, offline, in seconds.

It is a list of steps (:data:`STEPS`); each takes the shared :class:`DemoRun`, runs one stage
through :mod:`urbangeo.api` (exactly what the commands do) and returns its summary lines.
Later stages (train, predict) append their own step. Run it with ``urbangeo demo`` or
:func:`urbangeo.api.demo`.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
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


@dataclass
class DemoRun:
    """State handed from step to step; ``lines`` is everything the demo reported."""

    out_dir: Path
    seed: int
    overwrite: bool
    progress: Progress = SILENT
    sample: SampleCity | None = None
    cells: CellsFile | None = None
    lines: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def cells_path(self) -> Path:
        return self.out_dir / "cells.gpkg"


def _sample(run: DemoRun) -> list[str]:
    run.sample = make_synthetic_city(run.out_dir / "sample", seed=run.seed, progress=run.progress)
    return [f"synthetic city (seed {run.seed}) -> {run.sample.out_dir}"]


def _grid(run: DemoRun) -> list[str]:
    """Grid and indicators in one call (``urbangeo grid --indicator ...``), styled on population."""
    assert run.sample is not None
    result = api.grid(run.sample.aoi, output=run.cells_path,
                      indicators=run.sample.indicator_specs, style_column="population",
                      overwrite=run.overwrite, progress=run.progress)
    run.cells = result.cells
    return result.lines()


def _chips(run: DemoRun) -> list[str]:
    assert run.sample is not None
    result = api.chips(run.cells_path, run.sample.imagery, nir_band=4, overwrite=run.overwrite,
                       progress=run.progress)
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


Step = tuple[str, Callable[[DemoRun], list[str]]]
STEPS: list[Step] = [
    ("sample", _sample),
    ("grid", _grid),
    ("chips", _chips),
    ("caption", _caption),
    ("rasterize", _rasterize),
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


def run_demo(out_dir: Path, *, seed: int = 0, overwrite: bool = False,
             progress: Progress = SILENT, say: Callable[[str], None] | None = None) -> DemoRun:
    """Run every step of :data:`STEPS`, passing each summary line to ``say`` as it comes."""
    run = DemoRun(out_dir=out_dir, seed=seed, overwrite=overwrite, progress=progress)
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
    report(f"done in {time.perf_counter() - started:.1f} s; open {run.cells_path} in QGIS "
           "(styled on population)")
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
