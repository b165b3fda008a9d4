"""``urbangeo grid`` (AOI -> cells GeoPackage) and ``urbangeo rasterize`` (cell columns -> COG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from urbangeo import api
from urbangeo.cli.chips import imagery_options
from urbangeo.cli.indicators import indicator_option
from urbangeo.cli.progress import progress_of, say
from urbangeo.geo.styles import RAMPS


@click.command()
@click.argument("aoi", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Cells GeoPackage to write (.gpkg).")
@click.option("--layer", help="Layer of the AOI file to read (when it has several).")
@click.option("--bbox", help="AOI as minx,miny,maxx,maxy instead of a file (lon/lat by default; "
                             "minx > maxx crosses the antimeridian).")
@click.option("--bbox-crs", default="EPSG:4326", show_default=True, help="CRS of --bbox.")
@click.option("--crs", help="Grid CRS, projected in metres (default: the AOI's UTM zone, or "
                            "polar stereographic beyond 84°N/80°S).")
@click.option("--cell-size", type=float, default=1000.0, show_default=True,
              help="Cell side in metres (metric scheme).")
@click.option("--scheme", type=click.Choice(["metric", "xyz"]), default="metric",
              show_default=True, help="metric: squares in a projected CRS; xyz: web-mercator "
                                      "tiles at --zoom.")
@click.option("--zoom", type=int, help="Tile zoom for --scheme xyz (15 is ~1 km at mid latitudes).")
@click.option("--min-overlap", type=float, default=0.0, show_default=True,
              help="Keep a cell only if at least this fraction of it lies in the AOI "
                   "(0: any overlap with area).")
@click.option("--style-column",
              help="Numeric column for a graduated QGIS style (default: outlines).")
@indicator_option
@imagery_options
@click.option("--overwrite", is_flag=True,
              help="Replace the output if it exists (and start a new chip store).")
@click.pass_context
def grid(ctx: click.Context, **options: Any) -> None:
    """Cover an area of interest with square cells and write them as a GeoPackage.

    AOI is any vector file (GeoJSON, GeoPackage, Shapefile); give it or --bbox. Cells are
    anchored on multiples of the cell size, so the same area always gets the same cell_ids
    and overlapping AOIs share them. Every cell touching the AOI is kept.

    \b
    With --indicator and --imagery it also does the work of `urbangeo indicators` and
    `urbangeo chips` in the same run (see their --help). The cells file is written before
    chips are cut, so a run killed while cutting resumes with `urbangeo chips`.

    \b
    Examples:
      urbangeo grid city.geojson -o cells.gpkg
      urbangeo grid city.geojson -o cells.gpkg --indicator pop=worldpop.tif:sum \\
          --imagery scene.tif --bands 3,2,1
      urbangeo grid --bbox -122.23,37.57,-122.05,37.67 -o eastbay.gpkg
      urbangeo grid parcels.gpkg --layer districts --cell-size 500 -o cells.gpkg
      urbangeo grid city.geojson --scheme xyz --zoom 15 -o tiles.gpkg
      urbangeo grid fiji.gpkg --crs EPSG:3460 -o cells.gpkg     # your own metric CRS
    """
    if ctx.get_parameter_source("cell_size") == ParameterSource.DEFAULT:
        options["cell_size"] = None  # the default, and not a --cell-size given with --scheme xyz
    progress = progress_of(ctx)
    for line in api.grid(**options, progress=progress).lines():
        say(progress, line)


@click.command()
@click.argument("cells", type=click.Path(path_type=Path))
@click.argument("columns", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="GeoTIFF to write (.tif); a same-named .qml style is written beside it.")
@click.option("--ramp", type=click.Choice(sorted(RAMPS)), default="viridis", show_default=True,
              help="Colour ramp of the QGIS style.")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.pass_context
def rasterize(ctx: click.Context, cells: Path, columns: tuple[str, ...], output: Path,
              ramp: str, overwrite: bool) -> None:
    """Write numeric cell columns as a Cloud-Optimized GeoTIFF, one band per column.

    One pixel per cell on the cells' own grid (no resampling); cells without a value are
    nodata. QGIS opens it styled through the .qml written beside it.

    \b
    Examples:
      urbangeo rasterize cells.gpkg pop -o pop.tif
      urbangeo rasterize cells.gpkg pop night_lights -o indicators.tif --ramp YlOrRd
    """
    progress = progress_of(ctx)
    for line in api.rasterize(cells, columns, output, ramp=ramp, overwrite=overwrite,
                              progress=progress).lines():
        say(progress, line)
