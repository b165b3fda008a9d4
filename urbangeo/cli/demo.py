"""``urbangeo demo``: the whole pipeline on the bundled synthetic city, offline, in seconds.

The demo is a list of steps (:data:`STEPS`); each takes the shared :class:`DemoRun`, does one
stage through the Python API and returns a one-line summary. Later stages (caption, train,
predict) append their own step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from urbangeo.cli.progress import progress_of, say
from urbangeo.errors import InputError
from urbangeo.geo.cells import CellsFile, write_cells
from urbangeo.progress import SILENT, Progress
from urbangeo.sample import SampleCity, make_synthetic_city
from urbangeo.sample.synthetic_city import INDICATORS


@dataclass
class DemoRun:
    """State handed from step to step."""

    out_dir: Path
    seed: int
    overwrite: bool
    progress: Progress = SILENT
    sample: SampleCity | None = None
    cells: CellsFile | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def cells_path(self) -> Path:
        return self.out_dir / "cells.gpkg"

    def save(self, style_column: str | None = None) -> None:
        """Write the cells (graduated on ``style_column`` if given) atomically."""
        from urbangeo.geo.styles import cells_style

        assert self.cells is not None
        self.cells.style_qml = cells_style(self.cells.cells, style_column)
        write_cells(self.cells_path, self.cells)


def _sample(run: DemoRun) -> str:
    run.sample = make_synthetic_city(run.out_dir / "sample", seed=run.seed, progress=run.progress)
    return f"synthetic city (seed {run.seed}) -> {run.sample.out_dir}"


def _grid(run: DemoRun) -> str:
    from urbangeo.geo.grid import build_grid

    assert run.sample is not None
    run.cells = build_grid(run.sample.aoi, progress=run.progress)
    run.save()
    grid = run.cells.metadata["grid"]
    return (f"{grid['n_cells']} cells of {grid['cell_size_m']:g} m in {grid['crs']} "
            f"-> {run.cells_path}")


def _chips(run: DemoRun) -> str:
    from urbangeo.geo.chips import cut_chips

    assert run.sample is not None and run.cells is not None
    run.cells, report = cut_chips(run.cells, run.cells_path, [str(run.sample.imagery)],
                                  nir_band=4, overwrite=run.overwrite, progress=run.progress)
    run.save()
    return report.summary()


def _indicators(run: DemoRun) -> str:
    from urbangeo.geo.indicators import IndicatorSpec, add_indicators

    assert run.sample is not None and run.cells is not None
    specs = [IndicatorSpec.parse(text) for text in run.sample.indicator_specs]
    run.cells, report = add_indicators(run.cells, specs, progress=run.progress)
    run.save(style_column="population")
    return "; ".join(f"{r.name} {r.cells_value:,.0f} {r.units or ''}".rstrip()
                     for r in report.results) + f" -> {run.cells_path}"


def _rasterize(run: DemoRun) -> str:
    from urbangeo.geo.rasterize import write_cell_raster

    assert run.cells is not None
    path = write_cell_raster(run.cells, ["population"], run.out_dir / "population.tif",
                             progress=run.progress)
    return f"population per cell as a COG -> {path}"


Step = tuple[str, Callable[[DemoRun], str]]
STEPS: list[Step] = [
    ("sample", _sample),
    ("grid", _grid),
    ("chips", _chips),
    ("indicators", _indicators),
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


def run_demo(out_dir: Path, seed: int, overwrite: bool, progress: Progress,
             say: Callable[[str], None]) -> DemoRun:
    """Run every step of :data:`STEPS`, reporting each summary through ``say``."""
    run = DemoRun(out_dir=out_dir, seed=seed, overwrite=overwrite, progress=progress)
    if run.cells_path.exists() and not overwrite:
        raise InputError(f"{run.cells_path} already exists: pass --overwrite to redo the demo, "
                         "or choose another -o")
    started = time.perf_counter()
    for name, step in STEPS:
        say(f"{name:>11}: {step(run)}")
    say(f"done in {time.perf_counter() - started:.1f} s; open {run.cells_path} in QGIS "
        "(styled on population)")
    if run.cells is not None:
        indicators = [name for name in INDICATORS if name in run.cells.cells.columns]
        if indicators:
            say("most populated cells:")
            for line in _table(run.cells, indicators):
                say(line)
    return run


@click.command("demo")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("outputs"), show_default=True, help="Folder for the sample and results.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic city (same seed, same city).")
@click.option("--overwrite", is_flag=True, help="Redo the demo over an existing output folder.")
@click.pass_context
def demo(ctx: click.Context, out_dir: Path, seed: int, overwrite: bool) -> None:
    """Run the pipeline on a bundled SYNTHETIC city (offline, under a minute).

    Generates a procedural 6 km city (imagery, population, GDP, carbon rasters, AOI) in
    OUTPUT/sample, then grid -> chips -> indicators -> rasterize into OUTPUT/.
    """
    progress = progress_of(ctx)
    run_demo(out_dir, seed, overwrite, progress, lambda line: say(progress, line))
