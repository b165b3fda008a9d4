"""``urbangeo chips``: cut one satellite chip per cell into the chip store.

The imagery options live in :func:`imagery_options`, so ``urbangeo grid --imagery ...`` offers
exactly the same flags; both commands hand them to :mod:`urbangeo.api` under the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from urbangeo import api
from urbangeo.cli.progress import progress_of, say
from urbangeo.geo.chips import MIN_VALID_FRAC

_F = TypeVar("_F", bound=Callable[..., Any])


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of band numbers "
                                 "(e.g. 3,2,1)") from None


def _name_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    return None if value is None else [part.strip() for part in value.split(",")]


_OPTIONS = [
    click.option("--imagery", "imagery", multiple=True, metavar="SRC",
                 help="GeoTIFF/VRT/COG path or XYZ URL template (https://host/{z}/{x}/{y}.png); "
                      "repeat to mosaic several (the first valid pixel wins)."),
    click.option("--tile-px", type=click.IntRange(8, 4096), default=256, show_default=True,
                 help="Chip size in pixels (each chip spans its cell exactly)."),
    click.option("--bands", callback=_int_list, metavar="R,G,B",
                 help="1-based source bands shown as red,green,blue  [default: 1,2,3]."),
    click.option("--band-names", callback=_name_list, metavar="NAMES",
                 help="What the chip channels are, e.g. nir,red,green  [default: from the "
                      "raster's colour interpretation, else red,green,blue]."),
    click.option("--nir-band", type=click.IntRange(min=1), default=None,
                 help="1-based source band stored as a 4th 'nir' channel (for NDVI)."),
    click.option("--store", "store", type=click.Path(path_type=Path), default=None,
                 help="Chip store (.zarr)  [default: <cells stem>.chips.zarr beside the cells]."),
    click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                 envvar="URBANGEO_TILE_CACHE",
                 help="Tile cache for XYZ servers  [default: ~/.cache/urbangeo/tiles]."),
    click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Chips cut in parallel (threads)."),
    click.option("--max-connections", type=click.IntRange(min=1), default=4, show_default=True,
                 help="XYZ servers: most tile requests open at once (many allow 2 to 6)."),
    click.option("--min-valid-frac", type=click.FloatRange(0.0, 1.0, min_open=True),
                 default=MIN_VALID_FRAC, show_default=True,
                 help="Least fraction of a cell the imagery must cover for it to get a chip."),
]


def imagery_options(func: _F) -> _F:
    """The chip options (all but --overwrite, which each command defines for its own output)."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


@click.command("chips")
@click.argument("cells", metavar="CELLS.gpkg", type=click.Path(path_type=Path))
@imagery_options
@click.option("--overwrite", is_flag=True,
              help="Start a new chip store instead of filling the missing chips of the old one.")
@click.pass_context
def chips(ctx: click.Context, **options: Any) -> None:
    """Cut one satellite chip per cell of CELLS.gpkg (reruns fill only missing chips).

    \b
    urbangeo chips cells.gpkg --imagery scene.tif --bands 3,2,1
    urbangeo chips cells.gpkg --imagery 'https://tiles.example/{z}/{x}/{y}.png'
    """
    progress = progress_of(ctx)
    for line in api.chips(**options, progress=progress).lines():
        say(progress, line)
