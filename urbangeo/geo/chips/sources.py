"""What every imagery source offers the chip cutter, and the one warp they all share.

A source turns a cell (its exact extent in the grid CRS) into a uint8 chip plus a validity
mask. Local rasters (:mod:`.local`) and XYZ tile servers (:mod:`.xyz`) differ only in how they
get pixels around the cell; both then warp them with :func:`warp_to_cell`, so a chip means the
same thing whatever it came from.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject

# rasterio sometimes warns "Dataset has no geotransform" when in-memory arrays are warped from
# several threads at once (odc-geo issue #131); the chips are bit-identical to a one-thread run
# (checked on the 204 East Bay cells), so this exact warning from rasterio.warp is noise.
warnings.filterwarnings("ignore", message="Dataset has no geotransform",
                        category=NotGeoreferencedWarning, module="rasterio.warp")


@dataclass(frozen=True)
class CellWindow:
    """The target of one chip: a cell's extent in the grid CRS, cut into ``tile_px`` squares."""

    bounds: tuple[float, float, float, float]
    crs: CRS
    tile_px: int

    @property
    def transform(self) -> Affine:
        minx, miny, maxx, maxy = self.bounds
        return Affine((maxx - minx) / self.tile_px, 0.0, minx, 0.0,
                      -(maxy - miny) / self.tile_px, maxy)


class ChipSource(Protocol):
    """An imagery source; ``read`` may be called from several threads at once."""

    label: str  # how metadata and messages name it (URLs redacted)
    corrupt_tiles: int  # undecodable pieces treated as missing (always 0 for local rasters)

    def band_names_hint(self) -> list[str | None]:
        """Per selected band, its name (red, green, blue, nir) if the source says so, else None."""

    def overlaps(self, cell: CellWindow) -> bool:
        """Cheap test: could this source cover any of ``cell``?"""

    def read(self, cell: CellWindow) -> tuple[np.ndarray, np.ndarray]:
        """(C, T, T) uint8 chip and (T, T) bool mask of pixels the source really covers."""

    def describe(self) -> dict[str, Any]:
        """What to record in the ``chips`` metadata about this source (stretch, zoom, ...)."""

    def ground_resolution_m(self, lon: float, lat: float) -> float | None:
        """Native ground size of a pixel at (lon, lat), or None when the source adapts it to
        the chip (an XYZ server is read at the zoom that matches the chip's pixels)."""

    def close(self) -> None:
        """Release files and connections."""


def warp_to_cell(data: np.ndarray, valid: np.ndarray, src_transform: Affine, src_crs: CRS,
                 cell: CellWindow, *, spans_cell: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear-warp ``data`` (C, h, w) with its ``valid`` mask onto ``cell``.

    The mask travels as a GDAL alpha band, so the warper interpolates only from valid pixels
    (no dark fringes at nodata edges) and tells which output pixels it could fill. When the
    array spans the whole cell (``spans_cell``) and is all valid, the cheaper warp without alpha
    gives the same pixels.
    """
    n = data.shape[0]
    if spans_cell and valid.all():
        dst = np.zeros((n, cell.tile_px, cell.tile_px), dtype=data.dtype)
        reproject(data, dst, src_transform=src_transform, src_crs=src_crs,
                  dst_transform=cell.transform, dst_crs=cell.crs,
                  resampling=Resampling.bilinear)
        return dst, np.ones((cell.tile_px, cell.tile_px), bool)
    dtype = np.uint8 if data.dtype == np.uint8 else np.float32
    src = np.empty((n + 1, *data.shape[1:]), dtype=dtype)
    src[:n] = data
    src[n] = np.where(valid, 255, 0)
    dst = np.zeros((n + 1, cell.tile_px, cell.tile_px), dtype=dtype)
    reproject(src, dst, src_transform=src_transform, src_crs=src_crs,
              dst_transform=cell.transform, dst_crs=cell.crs, src_alpha=n + 1, dst_alpha=n + 1,
              resampling=Resampling.bilinear)
    return dst[:n], dst[n] >= 128


def open_sources(specs: Sequence[str | ChipSource], *, indexes: Sequence[int],
                 cache_dir: Path | None, max_connections: int = 4) -> list[ChipSource]:
    """One source per ``--imagery`` value: http(s) URL templates are XYZ servers (at most
    ``max_connections`` requests open at once to each), others files."""
    from urbangeo.geo.chips.local import LocalRaster
    from urbangeo.geo.chips.xyz import XYZSource

    sources: list[ChipSource] = []
    try:
        for spec in specs:
            if not isinstance(spec, str):
                sources.append(spec)
            elif spec.startswith(("http://", "https://")):
                sources.append(XYZSource(spec, indexes=indexes, cache_dir=cache_dir,
                                         max_connections=max_connections))
            else:
                sources.append(LocalRaster(Path(spec), indexes=indexes))
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources
