"""vector_context: per-cell counts, categories and line lengths from a GeoPackage we write."""

from __future__ import annotations

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import LineString, Point, box

from urbangeo.errors import CRSError, InputError
from urbangeo.geo.context import vector_context


@pytest.fixture()
def cells() -> gpd.GeoDataFrame:
    """Two 1 km cells side by side in UTM 10N (west 'a', east 'b')."""
    return gpd.GeoDataFrame({"cell_id": ["a", "b"]},
                            geometry=[box(500000, 4180000, 501000, 4181000),
                                      box(501000, 4180000, 502000, 4181000)], crs="EPSG:32610")


def _write(path, gdf: gpd.GeoDataFrame, layer: str) -> None:
    pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG")


def test_points_counted_by_category_after_reprojection(tmp_path, cells):
    pts = gpd.GeoDataFrame(
        {"amenity": ["restaurant", "restaurant", "school", "cafe", None]},
        geometry=[Point(500100, 4180100), Point(500900, 4180900), Point(500500, 4180500),
                  Point(501500, 4180500), Point(600000, 4180500)], crs="EPSG:32610",
    ).to_crs("EPSG:4326")  # stored in degrees: the join must reproject to the grid CRS
    path = tmp_path / "osm.gpkg"
    _write(path, pts, "pois")
    ctx = vector_context(cells, path, layer="pois", category_field="amenity")
    assert ctx["a"] == {"count": 3, "categories": {"restaurant": 2, "school": 1}}
    assert ctx["b"] == {"count": 1, "categories": {"cafe": 1}}


def test_border_point_counts_once(tmp_path, cells):
    path = tmp_path / "p.gpkg"
    _write(path, gpd.GeoDataFrame(geometry=[Point(501000, 4180500)], crs="EPSG:32610"), "p")
    ctx = vector_context(cells, path)
    assert ctx["a"]["count"] + ctx["b"]["count"] == 1


def test_line_length_is_clipped_to_each_cell(tmp_path, cells):
    roads = gpd.GeoDataFrame({"highway": ["primary", "residential"]},
                             geometry=[LineString([(500500, 4180500), (501800, 4180500)]),
                                       LineString([(500200, 4180100), (500200, 4180400)])],
                             crs="EPSG:32610")
    path = tmp_path / "roads.gpkg"
    _write(path, roads, "roads")
    ctx = vector_context(cells, path, category_field="highway")
    assert ctx["a"]["length_km"] == pytest.approx(0.5 + 0.3)
    assert ctx["b"]["length_km"] == pytest.approx(0.8)
    assert ctx["a"]["count"] == 2 and ctx["b"]["categories"] == {"primary": 1}


def test_user_mistakes_raise_clear_errors(tmp_path, cells):
    path = tmp_path / "p.gpkg"
    _write(path, gpd.GeoDataFrame({"kind": ["x"]}, geometry=[Point(500100, 4180100)],
                                  crs="EPSG:32610"), "p")
    with pytest.raises(InputError, match="no field 'amenity'.*kind"):
        vector_context(cells, path, category_field="amenity")
    with pytest.raises(InputError, match="does not exist"):
        vector_context(cells, tmp_path / "missing.gpkg")
    with pytest.raises(InputError, match="layers: p"):
        vector_context(cells, path, layer="nope")
    with pytest.raises(CRSError):
        vector_context(cells.set_crs(None, allow_override=True), path)
