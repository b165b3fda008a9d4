"""Chips per second from a local COG: urbangeo vs the plain rasterio idiom, in the same run.

A synthetic but textured 3-band uint8 COG (EPSG:3857, overviews, deflate) stands in for an
aerial/satellite scene; 1 km cells in UTM 10N tile its middle, so every chip is a true
reprojection. Measured (best of --repeat, chips of --tile-px):

- ``urbangeo``: :func:`urbangeo.geo.chips.cut_chips` into a fresh chip store (windowed reads,
  masks, mosaic logic, Zarr writes included), with 1 and with --workers threads;
- ``reproject``: the rasterio idiom, ``rasterio.warp.reproject(rasterio.band(ds, (1, 2, 3)),
  ...)`` per cell into a numpy array (GDAL reads what it needs; no mask, no store);
- ``whole+reproject``: the naive way: read the whole raster into memory once, then
  ``reproject`` the array per cell (read time included).

    .venv/bin/python bench/chips.py [--raster-px 8192] [--cells 144] [--workers 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds
from shapely.geometry import box

from urbangeo.geo.cells import CellsFile
from urbangeo.geo.chips import cut_chips
from urbangeo.geo.chips.sources import CellWindow

UTM = "EPSG:32610"


def synthetic_cog(path: Path, size: int, pixel_m: float, seed: int) -> Path:
    """A ``size``² uint8 RGB COG near Oakland with texture at several scales."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, (3, size // 64 + 1, size // 64 + 1), dtype=np.uint8)
    base = coarse.repeat(64, 1).repeat(64, 2)[:, :size, :size]
    fine = rng.integers(0, 40, (3, size, size), dtype=np.uint8)
    mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(-122.3,
                                                                                      37.85)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint8", crs="EPSG:3857", tiled=True, blockxsize=512,
                       blockysize=512, transform=Affine(pixel_m, 0, mx, 0, -pixel_m, my)) as ds:
        ds.write(base + fine)
    rasterio.shutil.copy(tmp, path, driver="COG", COMPRESS="DEFLATE", OVERVIEWS="AUTO")
    tmp.unlink()
    return path


def cells_inside(raster: Path, n_cells: int) -> CellsFile:
    """About ``n_cells`` 1 km UTM cells in the middle of the raster."""
    with rasterio.open(raster) as ds:
        minx, miny, maxx, maxy = transform_bounds(ds.crs, UTM, *ds.bounds)
    side = min(round(n_cells ** 0.5), int((maxx - minx) // 1000) - 1,
               int((maxy - miny) // 1000) - 1)
    x0, y0 = round((minx + maxx) / 2) - side * 500, round((miny + maxy) / 2) - side * 500
    records = [{"cell_id": f"c{r}_{c}", "row": r, "col": c,
                "geometry": box(x0 + c * 1000, y0 + r * 1000, x0 + (c + 1) * 1000,
                                y0 + (r + 1) * 1000)}
               for r in range(side) for c in range(side)]
    return CellsFile(gpd.GeoDataFrame(records, crs=UTM))


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def reproject_per_cell(raster: Path, windows: list[CellWindow]) -> None:
    with rasterio.open(raster) as ds:
        for cell in windows:
            dst = np.zeros((3, cell.tile_px, cell.tile_px), np.uint8)
            reproject(rasterio.band(ds, (1, 2, 3)), dst, dst_transform=cell.transform,
                      dst_crs=cell.crs, resampling=Resampling.bilinear)


def whole_then_reproject(raster: Path, windows: list[CellWindow]) -> None:
    with rasterio.open(raster) as ds:
        data, transform, crs = ds.read(), ds.transform, ds.crs
    for cell in windows:
        dst = np.zeros((3, cell.tile_px, cell.tile_px), np.uint8)
        reproject(data, dst, src_transform=transform, src_crs=crs, dst_transform=cell.transform,
                  dst_crs=cell.crs, resampling=Resampling.bilinear)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", type=Path, help="a COG/GeoTIFF (default: synthetic)")
    parser.add_argument("--raster-px", type=int, default=8192, help="synthetic raster side")
    parser.add_argument("--pixel-m", type=float, default=2.0,
                        help="synthetic pixel size (web-mercator m; ~1.6 m on the ground)")
    parser.add_argument("--cells", type=int, default=144, help="about this many 1 km cells")
    parser.add_argument("--tile-px", type=int, default=256)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        raster = args.raster or synthetic_cog(tmp / "scene.tif", args.raster_px, args.pixel_m,
                                              args.seed)
        cells = cells_inside(raster, args.cells)
        windows = [CellWindow(tuple(b), cells.cells.crs, args.tile_px)
                   for b in cells.cells.geometry.bounds.to_numpy()]
        n = len(windows)
        runs = iter(range(10_000))

        def ours(workers: int) -> Callable[[], object]:
            return lambda: cut_chips(cells, tmp / f"run{next(runs)}.gpkg", [str(raster)],
                                     tile_px=args.tile_px, workers=workers)

        results = [
            ("urbangeo, 1 thread", best_of(args.repeat, ours(1))),
            (f"urbangeo, {args.workers} threads", best_of(args.repeat, ours(args.workers))),
            ("reproject per cell", best_of(args.repeat,
                                           lambda: reproject_per_cell(raster, windows))),
            ("whole+reproject", best_of(args.repeat,
                                        lambda: whole_then_reproject(raster, windows))),
        ]
    reference = results[2][1]
    print(f"{n} cells of 1 km, {args.tile_px} px chips, from "
          f"{args.raster or f'a synthetic {args.raster_px} px COG'}; best of {args.repeat}")
    print(f"{'method':<24}{'seconds':>9}{'chips/s':>9}{'x reproject':>13}")
    for name, seconds in results:
        print(f"{name:<24}{seconds:>9.2f}{n / seconds:>9.1f}{reference / seconds:>13.2f}")


if __name__ == "__main__":
    main()
