"""AOI loading: real vector files of each format, repair, and the user mistakes it refuses."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely
from recording import RecordingProgress

from urbangeo.errors import CRSError, GeometryError, InputError
from urbangeo.geo.aoi import aoi_from_bbox, load_aoi


def _write(path: Path, geoms: list, crs: str | None = "EPSG:4326", layer: str | None = None,
           driver: str | None = None) -> Path:
    frame = gpd.GeoDataFrame({"name": [f"g{i}" for i in range(len(geoms))]}, geometry=geoms,
                             crs=crs)
    pyogrio.write_dataframe(frame, path, layer=layer, driver=driver)
    return path


TWO_SQUARES = [shapely.box(-122.0, 37.0, -121.99, 37.01),
               shapely.box(-121.98, 37.0, -121.97, 37.01)]


@pytest.mark.parametrize("name", ["aoi.geojson", "aoi.gpkg", "aoi.shp"])
def test_each_format_unions_to_one_multipolygon(tmp_path: Path, name: str) -> None:
    aoi = load_aoi(_write(tmp_path / name, TWO_SQUARES))
    assert aoi.geometry.geom_type == "MultiPolygon"
    assert aoi.geometry.area == pytest.approx(2 * 0.01 * 0.01)
    assert aoi.crs.to_epsg() == 4326


def test_layer_choice_and_multi_layer_refusal(tmp_path: Path) -> None:
    path = tmp_path / "two.gpkg"
    _write(path, TWO_SQUARES[:1], layer="west")
    _write(path, TWO_SQUARES[1:], layer="east")
    with pytest.raises(InputError, match="--layer"):
        load_aoi(path)
    assert load_aoi(path, layer="east").geometry.bounds[0] == pytest.approx(-121.98)
    with pytest.raises(InputError, match="no layer 'north'"):
        load_aoi(path, layer="north")


def test_bowtie_is_repaired_and_reported(tmp_path: Path) -> None:
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    assert not bowtie.is_valid
    progress = RecordingProgress()
    aoi = load_aoi(_write(tmp_path / "bow.gpkg", [bowtie, TWO_SQUARES[0]]), progress=progress)
    assert aoi.n_repaired == 1 and aoi.geometry.is_valid
    assert aoi.geometry.area == pytest.approx(0.5 + 1e-4)
    assert any("repaired 1 invalid" in m for m in progress.infos)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_missing_crs_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "nocrs.shp", TWO_SQUARES, crs=None)
    with pytest.raises(CRSError, match="no CRS: set one"):
        load_aoi(path)


def test_lines_only_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "lines.geojson", [shapely.LineString([(0, 0), (1, 1)])])
    with pytest.raises(GeometryError, match="no polygons"):
        load_aoi(path)
    with pytest.raises(InputError, match="does not exist"):
        load_aoi(tmp_path / "nope.geojson")
    (tmp_path / "junk.geojson").write_text("not json at all")
    with pytest.raises(InputError, match="cannot read"):
        load_aoi(tmp_path / "junk.geojson")


def test_real_city_outline(shared_data: Path) -> None:
    aoi = load_aoi(shared_data / "boundaries" / "san-jose.geojson")
    assert aoi.geometry.is_valid and aoi.geometry.geom_type in ("Polygon", "MultiPolygon")
    minx, miny, maxx, maxy = aoi.geometry.bounds
    assert -122.1 < minx < maxx < -121.5 and 37.1 < miny < maxy < 37.5


def test_bbox_parsing_and_antimeridian() -> None:
    aoi = aoi_from_bbox(" -122.23, 37.57,-122.05 ,37.67")
    assert aoi.geometry.bounds == pytest.approx((-122.23, 37.57, -122.05, 37.67))
    across = aoi_from_bbox("179.5,-17,-179.5,-16")
    assert across.geometry.bounds == pytest.approx((179.5, -17, 180.5, -16))
    metric = aoi_from_bbox("500000,4100000,510000,4110000", "EPSG:32610")
    assert metric.crs.to_epsg() == 32610 and metric.geometry.area == pytest.approx(1e8)


@pytest.mark.parametrize("text, match", [
    ("1,2,3", "not 4"),
    ("a,2,3,4", "not a number"),
    ("0,10,1,5", "miny"),
    ("0,-95,1,5", "-90..90"),
    ("200,0,210,1", "-180..180"),
    ("5,0,5,1", "zero width"),
    ("1,2,nan,4", "non-finite"),
    ("8.6,47.3,8.5,47.4", "did you swap minx and maxx"),
])
def test_bad_bbox(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        aoi_from_bbox(text)


def test_bad_bbox_in_projected_crs_and_bad_crs() -> None:
    with pytest.raises(InputError, match="minx"):
        aoi_from_bbox("510000,0,500000,10", "EPSG:32610")
    with pytest.raises(CRSError, match="not a coordinate reference system"):
        aoi_from_bbox("0,0,1,1", "EPSG:99999999")


def test_degrees_typed_with_a_metric_bbox_crs_are_refused() -> None:
    """8.5,47.3 in UTM 32N metres is a box a few centimetres wide off Gabon, not Zurich."""
    with pytest.raises(InputError, match="look like degrees: use --bbox-crs EPSG:4326"):
        aoi_from_bbox("8.5,47.3,8.6,47.4", "EPSG:32632")
    with pytest.raises(InputError, match="outside where --bbox-crs EPSG:32632 is defined"):
        aoi_from_bbox("5000000,5200000,5010000,5210000", "EPSG:32632")
    zurich = aoi_from_bbox("460000,5240000,470000,5250000", "EPSG:32632")
    assert zurich.geometry.area == pytest.approx(1e8)
