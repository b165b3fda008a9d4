"""Chips from local rasters (GeoTIFF, VRT, COG) in any CRS.

Per cell only the window around the cell is read (decimated through overviews when the source
is much finer than the chip), then warped onto the cell with :func:`.sources.warp_to_cell`.
rasterio datasets are not thread-safe, so every thread opens its own handle.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from urbangeo.errors import CRSError, InputError
from urbangeo.geo.chips.sources import CellWindow, warp_to_cell
from urbangeo.geo.chips.stretch import Stretch, compute_stretch

_COLOUR_NAMES = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}
_DESCRIPTION_NAMES = {"red": "red", "green": "green", "blue": "blue", "nir": "nir",
                      "near infrared": "nir", "near-infrared": "nir"}
_MARGIN_PX = 2  # source pixels read beyond the cell so bilinear edges have neighbours
_GEOD = Geod(ellps="WGS84")


class LocalRaster:
    """One raster file as a chip source (bands ``indexes``, 1-based)."""

    corrupt_tiles = 0

    def __init__(self, path: Path, *, indexes: Sequence[int]) -> None:
        if not path.exists():
            raise InputError(f"imagery file {path} does not exist: check the --imagery path")
        self.path = path
        self.label = str(path.resolve())
        self.indexes = [int(i) for i in indexes]
        try:
            with rasterio.open(path) as ds:
                self._check(ds)
                self.stretch: Stretch | None = compute_stretch(ds, self.indexes)
                self.crs: CRS = ds.crs
                self.bounds = tuple(ds.bounds)
                self.res = max(abs(ds.res[0]), abs(ds.res[1]))
                self._hint = [self._band_name(ds, i) for i in self.indexes]
                self._all_valid = all(flags == [MaskFlags.all_valid]
                                      for flags in ds.mask_flag_enums)
        except RasterioError as exc:
            raise InputError(f"cannot read imagery {path} ({exc}): is it a GeoTIFF/VRT/COG "
                             "that GDAL can open?") from exc
        self._footprints: dict[str, tuple[float, float, float, float] | None] = {}
        self._local = threading.local()
        self._handles: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def _check(self, ds: rasterio.DatasetReader) -> None:
        if ds.crs is None:
            raise CRSError(f"imagery {self.path} has no CRS: georeference it (gdal_edit.py -a_srs)")
        missing = [i for i in self.indexes if not 1 <= i <= ds.count]
        if missing:
            raise InputError(f"imagery {self.path} has {ds.count} band(s); band "
                             f"{','.join(map(str, missing))} does not exist: "
                             "fix --bands/--nir-band")

    @staticmethod
    def _band_name(ds: rasterio.DatasetReader, index: int) -> str | None:
        description = (ds.descriptions[index - 1] or "").strip().lower()
        if description in _DESCRIPTION_NAMES:
            return _DESCRIPTION_NAMES[description]
        return _COLOUR_NAMES.get(ds.colorinterp[index - 1])

    def band_names_hint(self) -> list[str | None]:
        return list(self._hint)

    def ground_resolution_m(self, lon: float, lat: float) -> float | None:
        # Geodesic length of one pixel step: web-mercator and degree pixels are not ground metres.
        to_src = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        x, y = to_src.transform(lon, lat)
        (lon0, lon1), (lat0, lat1) = to_src.transform([x, x + self.res], [y, y],
                                                       direction="INVERSE")
        return float(_GEOD.inv(lon0, lat0, lon1, lat1)[2])

    def describe(self) -> dict[str, Any]:
        return {"source": self.label, "kind": "raster", "bands": self.indexes,
                "stretch": self.stretch.to_json() if self.stretch else None}

    def overlaps(self, cell: CellWindow) -> bool:
        key = cell.crs.to_string()
        if key not in self._footprints:
            try:
                self._footprints[key] = transform_bounds(self.crs, cell.crs, *self.bounds,
                                                         densify_pts=21)
            except RasterioError:
                self._footprints[key] = None  # cannot tell cheaply: let read() decide
        box = self._footprints[key]
        if box is None:
            return True
        minx, miny, maxx, maxy = cell.bounds
        return minx < box[2] and maxx > box[0] and miny < box[3] and maxy > box[1]

    def _dataset(self) -> rasterio.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = self._local.ds = rasterio.open(self.path)
            with self._lock:
                self._handles.append(ds)
        return ds

    def read(self, cell: CellWindow) -> tuple[np.ndarray, np.ndarray]:
        ds = self._dataset()
        n, px = len(self.indexes), cell.tile_px
        left, bottom, right, top = transform_bounds(cell.crs, ds.crs, *cell.bounds, densify_pts=21)
        window, clipped = _pixel_window(ds, (left, bottom, right, top))
        if window is None:
            return np.zeros((n, px, px), np.uint8), np.zeros((px, px), bool)
        # Decimate when the chip is much coarser than the source (GDAL then uses overviews).
        factor = math.floor(min(right - left, top - bottom) / px / self.res)
        shape = (window.height, window.width)
        if factor >= 2:
            shape = (math.ceil(window.height / factor), math.ceil(window.width / factor))
        data = ds.read(self.indexes, window=window, out_shape=(n, *shape),
                       resampling=Resampling.average)
        if self._all_valid:  # no nodata, mask or alpha: skip reading a mask of all 255
            valid = np.ones(shape, bool)
        else:
            valid = ds.dataset_mask(window=window, out_shape=shape) > 0
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        if not valid.all():
            data[:, ~valid] = 0  # NaN or fill values must not leak into bilinear neighbours
        transform = ds.window_transform(window) @ Affine.scale(window.width / shape[1],
                                                               window.height / shape[0])
        warped, mask = warp_to_cell(data, valid, transform, ds.crs, cell, spans_cell=not clipped)
        chip = warped if self.stretch is None else self.stretch.apply(warped)
        if not mask.all():
            chip[:, ~mask] = 0
        return chip, mask

    def close(self) -> None:
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()


def _pixel_window(ds: rasterio.DatasetReader, bounds: tuple[float, float, float, float]
                  ) -> tuple[Window | None, bool]:
    """Whole-pixel window of ``bounds`` (+ margin) clipped to the raster (``None`` if outside),
    and whether clipping cut into it."""
    win = from_bounds(*bounds, transform=ds.transform)
    wanted = (math.floor(win.col_off) - _MARGIN_PX, math.floor(win.row_off) - _MARGIN_PX,
              math.ceil(win.col_off + win.width) + _MARGIN_PX,
              math.ceil(win.row_off + win.height) + _MARGIN_PX)
    col0, row0 = max(0, wanted[0]), max(0, wanted[1])
    col1, row1 = min(ds.width, wanted[2]), min(ds.height, wanted[3])
    if col1 <= col0 or row1 <= row0:
        return None, True
    return Window(col0, row0, col1 - col0, row1 - row0), (col0, row0, col1, row1) != wanted
