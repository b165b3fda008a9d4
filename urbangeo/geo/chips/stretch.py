"""Map imagery of any data type onto uint8 chips with ONE stretch per source.

A stretch computed per chip would give every chip full contrast, so a dark industrial cell and a
bright beach would look alike and chips could no longer be compared across cells. Instead each
source gets one linear per-band stretch from its 2nd to 98th percentile (the same "cumulative
count cut 2-98%" QGIS applies by default), computed once from a decimated read of the whole
raster (overviews when present) and recorded in the cells file's ``chips`` metadata.
uint8 imagery passes through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from urbangeo.errors import DataError

PERCENTILES = (2.0, 98.0)
SAMPLE_PX = 1024  # longest side of the decimated read the percentiles come from


@dataclass(frozen=True)
class Stretch:
    """Linear map of each band's ``[low, high]`` onto ``0..255`` (values outside are clipped)."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] = PERCENTILES

    def apply(self, data: np.ndarray) -> np.ndarray:
        """(C, H, W) numbers of the stretched bands -> (C, H, W) uint8."""
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        high = np.asarray(self.high, dtype=np.float32)[:, None, None]
        scaled = (data.astype(np.float32) - low) * (255.0 / (high - low))
        return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)

    def to_json(self) -> dict[str, Any]:
        return {"method": "linear per-band percentile clip", "percentiles": list(self.percentiles),
                "low": list(self.low), "high": list(self.high)}


def compute_stretch(ds: rasterio.DatasetReader, indexes: list[int]) -> Stretch | None:
    """The stretch for bands ``indexes`` of ``ds`` (``None`` for uint8, which passes through)."""
    if all(ds.dtypes[i - 1] == "uint8" for i in indexes):
        return None
    scale = max(1.0, max(ds.width, ds.height) / SAMPLE_PX)
    shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
    data = ds.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
    valid = ds.dataset_mask(out_shape=shape) > 0
    valid &= np.isfinite(data).all(axis=0)
    if not valid.any():
        raise DataError(f"{ds.name} has no valid pixels (all nodata): check the file or its "
                        "nodata value")
    low, high = [], []
    for band in data.astype(np.float64):
        lo, hi = np.percentile(band[valid], PERCENTILES)
        low.append(float(lo))
        high.append(float(hi) if hi > lo else float(lo) + 1.0)
    return Stretch(tuple(low), tuple(high))
