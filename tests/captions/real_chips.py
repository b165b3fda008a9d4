"""Real test chips cut from the shared rasters and resampled to 256 x 256, as the chip store does.

Windows were picked by looking at the scenes (saved as PNG and viewed): open bay south of the
Bay Bridge, the vegetated Berkeley/Oakland hills, San Francisco's downtown grid (with a strip of
bay on its east edge) and the Oakland flats around Lake Merritt; two 1 km cells in Hayward, the
tan summer grassland (tracks, no buildings) of cell 32610-1000-E578-N4163 and the grey
industrial street grid of E577-N4165; in Haiti (5 m) a dense settlement, the gravel river bed,
and tree cover on the river's east bank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

SF_BANDS = ("nir", "red", "green")
HAITI_BANDS = ("red", "green", "blue", "nir")
TILE = 256

SF_WINDOWS = {"bay": (1300, 1150, 64), "hills": (1850, 700, 64), "downtown": (850, 850, 64),
              "oakland": (1450, 900, 64), "dry_grass": (1926, 1682, 40),
              "hayward_grid": (1884, 1598, 40)}  # (col, row, side) in Landsat pixels (~24 m)
HAITI_WINDOWS = {"settlement": (60, 60, 200), "river_bed": (330, 250, 60),
                 "trees": (400, 180, 80)}  # (col, row, side) in 5 m pixels


def _read(path: Path, col: int, row: int, side: int) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(window=Window(col, row, side, side), out_shape=(src.count, TILE, TILE),
                        resampling=Resampling.bilinear)


def sfbay_chip(shared_data: Path, place: str) -> np.ndarray:
    col, row, side = SF_WINDOWS[place]
    return _read(shared_data / "sfbay" / "landsat7_sfbay_nirrg_30m.tif", col, row, side)


def haiti_chip(shared_data: Path, place: str) -> tuple[np.ndarray, float]:
    """The chip and its ground pixel size (5 m source pixels spread over 256)."""
    col, row, side = HAITI_WINDOWS[place]
    return _read(shared_data / "haiti" / "haiti_rgbn_5m.tif", col, row, side), 5.0 * side / TILE
