"""Cell columns to COG: one pixel per cell on the exact grid, NaN where no value, styled."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from rio_cogeo.cogeo import cog_validate

from urbangeo.errors import InputError
from urbangeo.geo import rasterize as rasterize_module
from urbangeo.geo.aoi import AOI
from urbangeo.geo.cells import CellsFile
from urbangeo.geo.grid import build_grid
from urbangeo.geo.rasterize import write_cell_raster


def _sample(path: Path, cf: CellsFile, band: int = 1) -> np.ndarray:
    centres = cf.cells.geometry.centroid
    with rasterio.open(path) as ds:
        return np.array([v[band - 1] for v in ds.sample(zip(centres.x, centres.y, strict=True))])


def test_metric_cells_become_pixels_with_nan_holes(tmp_path: Path) -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67")
    n = len(cf.cells)
    cf.cells["pop"] = np.linspace(0, 1000, n)
    cf.cells["density"] = np.where(np.arange(n) % 3 == 0, np.nan, np.arange(n) * 2.0)
    out = write_cell_raster(cf, ["pop", "density"], tmp_path / "ind.tif")
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as ds:
        assert ds.count == 2 and ds.descriptions == ("pop", "density")
        assert ds.dtypes == ("float32", "float32") and math.isnan(ds.nodata)
        assert ds.crs.to_epsg() == 32610
        t = ds.transform
        assert (t.a, t.e) == (1000.0, -1000.0)
        assert (t.c, t.f) == (cf.cells.col.min() * 1000.0, (cf.cells.row.max() + 1) * 1000.0)
        assert ds.width * ds.height >= n
        assert np.isfinite(ds.read(1)).sum() == n  # one pixel per cell, the rest nodata
    np.testing.assert_allclose(_sample(out, cf, 1), cf.cells["pop"], rtol=1e-6)
    np.testing.assert_allclose(_sample(out, cf, 2), cf.cells["density"], rtol=1e-6)
    style = ET.fromstring((tmp_path / "ind.qml").read_text().split("\n", 1)[1])
    assert style.find("pipe/rasterrenderer").get("type") == "singlebandpseudocolor"


def test_large_raster_gets_overviews_and_validates(tmp_path: Path) -> None:
    aoi = AOI(shapely.Point(500000, 4100000).buffer(6000), pyproj.CRS.from_epsg(32610), "disk")
    cf = build_grid(aoi, cell_size=20)
    cf.cells["v"] = cf.cells["row"].astype(float)
    out = write_cell_raster(cf, ["v"], tmp_path / "big.tif")
    assert cog_validate(str(out))[0]
    with rasterio.open(out) as ds:
        assert ds.width == 600 and ds.overviews(1)


def test_xyz_tiles_become_web_mercator_pixels(tmp_path: Path) -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67", scheme="xyz", zoom=14)
    cf.cells["v"] = cf.cells["col"] * 100.0 + cf.cells["row"]
    out = write_cell_raster(cf, ["v"], tmp_path / "tiles.tif")
    assert cog_validate(str(out))[0]
    tile = 2 * math.pi * 6378137 / 2**14
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 3857 and ds.transform.a == pytest.approx(tile)
        assert ds.transform.c == pytest.approx(-math.pi * 6378137 + cf.cells.col.min() * tile)
        assert ds.transform.f == pytest.approx(math.pi * 6378137 - cf.cells.row.min() * tile)
    np.testing.assert_allclose(_sample(out, cf), cf.cells["v"])


def test_xyz_across_antimeridian_stays_narrow(tmp_path: Path) -> None:
    cf = build_grid(bbox="179.9,-17,-179.9,-16.9", scheme="xyz", zoom=10)
    cf.cells["v"] = 1.0
    out = write_cell_raster(cf, ["v"], tmp_path / "am.tif")
    with rasterio.open(out) as ds:
        assert ds.width == 2 and np.isfinite(ds.read(1)).sum() == len(cf.cells)


@pytest.mark.parametrize("columns, out, match", [
    (["cell_id"], "x.tif", "not numeric"),
    (["gdp"], "x.tif", "not a column"),
    ([], "x.tif", "at least one column"),
    (["row"], "x.png", "must end in .tif"),
])
def test_bad_requests(tmp_path: Path, columns: list[str], out: str, match: str) -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67")
    with pytest.raises(InputError, match=match):
        write_cell_raster(cf, columns, tmp_path / out)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67")
    out = tmp_path / "pop.tif"
    out.write_bytes(b"old")
    real_open = rasterio.open

    def open_then_fail(path, mode="r", **kwargs):
        real_open(path, mode, **kwargs).close()
        raise OSError("disk full")

    monkeypatch.setattr(rasterize_module.rasterio, "open", open_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_cell_raster(cf, ["row"], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pop.tif"]
    assert out.read_bytes() == b"old"


def test_missing_grid_metadata_or_indices(tmp_path: Path) -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67")
    cf.cells["v"] = 1.0
    no_index = CellsFile(cf.cells.drop(columns=["row"]), cf.metadata)
    with pytest.raises(InputError, match="no row/col"):
        write_cell_raster(no_index, ["v"], tmp_path / "x.tif")
    cf.metadata = {}
    with pytest.raises(InputError, match="no grid metadata"):
        write_cell_raster(cf, ["v"], tmp_path / "x.tif")
