"""Benchmark: urbangeo's vectorised grid + GeoPackage write vs a naive per-cell construction.

The naive baseline does what QGIS's ``native:creategrid`` plus a "select by location" amounts
to in Python: loop over every candidate cell, build a shapely box, keep it if it intersects the
AOI, then write all kept cells with ``GeoDataFrame.to_file``. Both runs grid the same disk-
shaped AOI (area = N km², so about N one-km cells) in the same process, and the ratio is
printed. Times are process CPU seconds (both runs are single-threaded), so the ratio holds on a
busy shared machine too; wall-clock totals are printed beside them.
Run: ``python bench/grid.py --cells 1000000`` (default) or ``--cells 100000`` for a quick look.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import pyproj
import shapely
from shapely.geometry import box

from urbangeo.geo.aoi import AOI
from urbangeo.geo.cells import write_cells
from urbangeo.geo.grid import build_grid

CRS = pyproj.CRS.from_epsg(32610)
CENTRE = (500_000.0, 4_200_000.0)


def disk_aoi(n_cells: int, cell_size: float) -> AOI:
    radius = math.sqrt(n_cells / math.pi) * cell_size
    return AOI(shapely.Point(CENTRE).buffer(radius, quad_segs=64), CRS, "bench disk")


def run_urbangeo(aoi: AOI, cell_size: float, out: Path) -> tuple[int, float, float]:
    """Cell count, CPU seconds to build the grid, CPU seconds to write it."""
    start = time.process_time()
    cf = build_grid(aoi, cell_size=cell_size, crs=CRS)
    built = time.process_time()
    write_cells(out, cf)
    return len(cf.cells), built - start, time.process_time() - built


def run_naive(aoi: AOI, cell_size: float, out: Path) -> tuple[int, float, float]:
    start = time.process_time()
    geom = aoi.geometry
    shapely.prepare(geom)
    minx, miny, maxx, maxy = geom.bounds
    ids, cells = [], []
    for col in range(math.floor(minx / cell_size), math.ceil(maxx / cell_size)):
        for row in range(math.floor(miny / cell_size), math.ceil(maxy / cell_size)):
            cell = box(col * cell_size, row * cell_size, (col + 1) * cell_size,
                       (row + 1) * cell_size)
            if geom.intersects(cell):
                ids.append(f"{col}-{row}")
                cells.append(cell)
    built = time.process_time()
    gpd.GeoDataFrame({"cell_id": ids}, geometry=cells, crs=CRS).to_file(out, driver="GPKG")
    return len(cells), built - start, time.process_time() - built


def _report(name: str, n: int, build: float, write: float, wall: float) -> None:
    print(f"{name}: {n:,} cells, CPU build {build:.2f} s + write {write:.2f} s = "
          f"{build + write:.2f} s ({n / (build + write):,.0f} cells/s; wall {wall:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1_000_000,
                        help="approximate number of cells to generate (default 1,000,000)")
    parser.add_argument("--cell-size", type=float, default=1000.0, help="cell side in metres")
    parser.add_argument("--skip-naive", action="store_true",
                        help="time urbangeo only (the naive loop is slow at 1M cells)")
    args = parser.parse_args()
    aoi = disk_aoi(args.cells, args.cell_size)
    with tempfile.TemporaryDirectory() as tmp:
        wall = time.perf_counter()
        n_ours, build_ours, write_ours = run_urbangeo(aoi, args.cell_size, Path(tmp) / "u.gpkg")
        _report("urbangeo build_grid + write_cells", n_ours, build_ours, write_ours,
                time.perf_counter() - wall)
        if args.skip_naive:
            return
        wall = time.perf_counter()
        n_naive, build_naive, write_naive = run_naive(aoi, args.cell_size, Path(tmp) / "n.gpkg")
        _report("naive shapely loop + to_file     ", n_naive, build_naive, write_naive,
                time.perf_counter() - wall)
    print(f"speed-up, grid construction: {build_naive / build_ours:.1f}x; end to end with the "
          f"GeoPackage write: {(build_naive + write_naive) / (build_ours + write_ours):.1f}x "
          "(same AOI, same run)")
    if n_naive != n_ours:
        print(f"note: naive keeps {n_naive - n_ours:+,} cells (it also keeps cells that only touch "
              "the AOI's edge)")


if __name__ == "__main__":
    main()
