"""Cell columns as a Cloud-Optimized GeoTIFF on the grid: one pixel per cell, one band a column.

The pixel grid is the cell grid itself (origin + index × cell size from the ``grid`` metadata),
so no resampling happens: a pixel's value is exactly its cell's value, and cells without a
value are nodata (NaN). A same-named ``.qml`` sidecar makes QGIS open the raster styled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import rasterio
from affine import Affine

from urbangeo._atomic import atomic_path, write_text_atomic
from urbangeo.errors import InputError
from urbangeo.geo.cells import CellsFile
from urbangeo.geo.crs import WEB_MERCATOR_HALF
from urbangeo.geo.styles import raster_style
from urbangeo.progress import SILENT, Progress

#: Refuse rasters larger than this many pixels per band (1 GB of float32; the COG is built
#: in memory), which only sparse cells over a huge extent reach.
MAX_PIXELS = 250_000_000


def _numeric_columns(cells: pd.DataFrame) -> list[str]:
    return [c for c in cells.columns
            if c != "geometry" and pd.api.types.is_numeric_dtype(cells[c])]


def _check_columns(cells: pd.DataFrame, columns: Sequence[str]) -> None:
    if not columns:
        raise InputError("name at least one column to rasterize")
    numeric = _numeric_columns(cells)
    for column in columns:
        if column not in cells.columns or column not in numeric:
            problem = "is not a column of" if column not in cells.columns else "is not numeric in"
            raise InputError(f"'{column}' {problem} the cells: rasterize one of "
                             f"{', '.join(numeric) or '(no numeric columns yet)'}")


def raster_grid(cf: CellsFile) -> tuple[np.ndarray, np.ndarray, Affine, int, int]:
    """(pixel rows, pixel cols, transform, height, width) placing each cell on its own pixel."""
    grid = cf.metadata.get("grid")
    if not grid or "cell_size_m" not in grid:
        raise InputError("the cells file has no grid metadata: make it with `urbangeo grid`")
    if not {"row", "col"} <= set(cf.cells.columns):
        raise InputError("the cells have no row/col columns: rasterize a layer made by "
                         "`urbangeo grid` (or copy its row and col columns)")
    size = float(grid["cell_size_m"])
    x0, y0 = (float(v) for v in grid["origin"])
    cols = cf.cells["col"].to_numpy(dtype=np.int64)
    rows = cf.cells["row"].to_numpy(dtype=np.int64)
    if grid["scheme"] == "xyz":
        n = 2 ** int(grid["zoom"])
        if cols.max() - cols.min() > n // 2:  # tiles on both sides of 180°: keep them adjacent
            cols = np.where(cols < n // 2, cols + n, cols)
        c0, r0 = cols.min(), rows.min()
        transform = Affine(size, 0.0, x0 + c0 * size, 0.0, -size, y0 - r0 * size)
        pix_rows = rows - r0
    else:  # metric rows count northwards: the top pixel row is the largest row
        c0, r_top = cols.min(), rows.max()
        transform = Affine(size, 0.0, x0 + c0 * size, 0.0, -size, y0 + (r_top + 1) * size)
        pix_rows = r_top - rows
    pix_cols = cols - c0
    height, width = int(pix_rows.max()) + 1, int(pix_cols.max()) + 1
    if height * width > MAX_PIXELS:
        raise InputError(f"the raster would be {width} x {height} pixels: the cells are spread "
                         "too thin; rasterize a smaller cells file")
    return pix_rows, pix_cols, transform, height, width


def write_cell_raster(
    cf: CellsFile,
    columns: Sequence[str],
    out_path: str | Path,
    *,
    ramp: str = "viridis",
    progress: Progress = SILENT,
) -> Path:
    """Write ``columns`` of ``cf`` as a float32 COG (band i = column i) plus a ``.qml`` sidecar.

    Returns the path written. The sidecar styles band 1 with a pseudocolor ramp stretched over
    its 2-98% range.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"output {out_path} must end in .tif (a Cloud-Optimized GeoTIFF)")
    columns = list(columns)
    _check_columns(cf.cells, columns)
    pix_rows, pix_cols, transform, height, width = raster_grid(cf)
    crs = cf.cells.crs or pyproj.CRS.from_user_input(cf.metadata["grid"]["crs"])
    east_edge = transform.c + width * transform.a
    if cf.metadata["grid"]["scheme"] == "xyz" and east_edge > WEB_MERCATOR_HALF:
        progress.info("rasterize: tiles cross the antimeridian; the raster extends east of 180°")
    progress.start("rasterize", len(columns))
    bands = np.full((len(columns), height, width), np.nan, dtype=np.float32)
    for i, column in enumerate(columns):
        bands[i, pix_rows, pix_cols] = cf.cells[column].to_numpy(dtype=np.float32, na_value=np.nan)
        progress.advance(1, column)
    profile = {
        "driver": "COG", "width": width, "height": height, "count": len(columns),
        "dtype": "float32", "crs": crs, "transform": transform, "nodata": np.nan,
        "compress": "DEFLATE", "predictor": 3, "blocksize": 512, "overview_resampling": "average",
        "BIGTIFF": "IF_SAFER",
    }
    with atomic_path(out_path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(bands)
            for i, column in enumerate(columns, start=1):
                dst.set_band_description(i, column)
    progress.finish()
    first = bands[0][np.isfinite(bands[0])]
    if first.size:
        vmin, vmax = (float(v) for v in np.quantile(first, [0.02, 0.98]))
        write_text_atomic(out_path.with_suffix(".qml"), raster_style(vmin, vmax, ramp=ramp))
    return out_path
