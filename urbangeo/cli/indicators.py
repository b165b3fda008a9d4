"""``urbangeo indicators``: add area-weighted raster values to a cells GeoPackage.

``indicator_option`` and :func:`run_indicators` are shared with ``urbangeo grid --indicator``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from urbangeo.cli.progress import progress_of, say
from urbangeo.geo.cells import CellsFile, read_cells, write_cells
from urbangeo.geo.indicators import IndicatorReport, IndicatorSpec, add_indicators
from urbangeo.progress import Progress

F = TypeVar("F", bound=Callable[..., Any])


def _parse_specs(_ctx: click.Context, _param: click.Parameter,
                 values: tuple[str, ...]) -> list[IndicatorSpec]:
    return [IndicatorSpec.parse(value) for value in values]


def indicator_option(func: F) -> F:
    """``--indicator NAME=RASTER[:sum|mean]`` (repeatable), parsed into ``specs``
    (a ``list[IndicatorSpec]``, empty when not given)."""
    return click.option(
        "--indicator", "specs", multiple=True, callback=_parse_specs,
        metavar="NAME=RASTER[:sum|mean]",
        help="Add column NAME from RASTER (any CRS): ':sum' (default) for counts such as "
             "population, ':mean' for densities. Nodata is ignored; cells without data get NaN. "
             "Repeatable.",
    )(func)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def _summary(report: IndicatorReport) -> list[str]:
    lines = []
    for r in report.results:
        what = "total" if r.stat == "sum" else "area-weighted mean"
        units = f" {r.units}" if r.units else ""
        line = (f"{r.name} ({r.stat}): {r.n_with_values}/{r.n_cells} cells with values, "
                f"{what} {_number(r.cells_value)}{units}")
        if r.n_without_values:
            line += f"; {r.n_without_values} without data (NaN)"
        if r.n_partial:
            line += f"; {r.n_partial} partly covered"
        lines.append(line)
    return lines


def run_indicators(cells: CellsFile, progress: Progress,
                   specs: list[IndicatorSpec]) -> CellsFile:
    """Add ``specs`` as columns of ``cells`` and show one summary line per indicator."""
    cells, report = add_indicators(cells, specs, progress=progress)
    for line in _summary(report):
        say(progress, line)
    return cells


@click.command("indicators")
@click.argument("cells_file", type=click.Path(path_type=Path, dir_okay=False))
@indicator_option
@click.pass_context
def indicators(ctx: click.Context, cells_file: Path, specs: list[IndicatorSpec]) -> None:
    """Add indicator columns to CELLS_FILE from count or density rasters.

    \b
    Example:
      urbangeo indicators cells.gpkg --indicator pop=worldpop.tif:sum \\
          --indicator ntl=viirs.tif:mean
    The file is rewritten atomically; re-running an indicator replaces its column.
    """
    if not specs:
        raise click.UsageError("give at least one --indicator NAME=RASTER[:sum|mean]")
    write_cells(cells_file, run_indicators(read_cells(cells_file), progress_of(ctx), specs))
