"""``urbangeo indicators``: add area-weighted raster values to a cells GeoPackage.

``indicator_option`` is shared with ``urbangeo grid --indicator``; the strings go to
:mod:`urbangeo.api` as they are, which parses them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from urbangeo import api
from urbangeo.cli.progress import progress_of, say

F = TypeVar("F", bound=Callable[..., Any])


def indicator_option(func: F) -> F:
    """``--indicator NAME=RASTER[:sum|mean]`` (repeatable), passed on as ``indicators``
    (a tuple of strings, empty when not given)."""
    return click.option(
        "--indicator", "indicators", multiple=True,
        metavar="NAME=RASTER[:sum|mean]",
        help="Add column NAME from RASTER (any CRS): ':sum' (default) for counts such as "
             "population, ':mean' for densities. Nodata is ignored; cells without data get NaN. "
             "Repeatable.",
    )(func)


@click.command("indicators")
@click.argument("cells", metavar="CELLS_FILE", type=click.Path(path_type=Path, dir_okay=False))
@indicator_option
@click.pass_context
def indicators(ctx: click.Context, cells: Path, indicators: tuple[str, ...]) -> None:
    """Add indicator columns to CELLS_FILE from count or density rasters.

    \b
    Example:
      urbangeo indicators cells.gpkg --indicator pop=worldpop.tif:sum \\
          --indicator ntl=viirs.tif:mean
    The file is rewritten atomically; re-running an indicator replaces its column.
    """
    progress = progress_of(ctx)
    for line in api.indicators(cells, indicators, progress=progress).lines():
        say(progress, line)
