"""Grids: anchored ids, every touching cell kept, and the awkward places on Earth."""

from __future__ import annotations

import math
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
from recording import RecordingProgress

from urbangeo.errors import CRSError, GeometryError, InputError
from urbangeo.geo.aoi import AOI, load_aoi
from urbangeo.geo.grid import GridSpec, build_grid, select_cells

UTM10 = pyproj.CRS.from_epsg(32610)


def utm_aoi(*bounds: float) -> AOI:
    return AOI(shapely.box(*bounds), UTM10, "test")


def test_ids_are_deterministic_anchored_and_shared_by_overlapping_aois() -> None:
    big = build_grid(bbox="-122.23,37.57,-122.05,37.67").cells
    again = build_grid(bbox="-122.23,37.57,-122.05,37.67").cells
    assert list(big.cell_id) == list(again.cell_id)
    small = build_grid(bbox="-122.15,37.60,-122.10,37.63").cells
    assert set(small.cell_id) < set(big.cell_id)
    shared = big.set_index("cell_id").loc[small.cell_id]
    assert shapely.equals(shared.geometry.values, small.geometry.values).all()
    for cell in big.itertuples():
        match = re.fullmatch(r"32610-1000-E(\d+)-N(\d+)", cell.cell_id)
        assert match and (int(match[1]), int(match[2])) == (cell.col, cell.row)
        assert cell.geometry.bounds == (cell.col * 1000, cell.row * 1000,
                                        cell.col * 1000 + 1000, cell.row * 1000 + 1000)


def test_edge_cells_kept_and_touching_neighbours_not() -> None:
    ragged = build_grid(utm_aoi(500100, 4100100, 502900, 4102900)).cells
    assert sorted(ragged.cell_id) == sorted(
        f"32610-1000-E{c}-N{r}" for c in (500, 501, 502) for r in (4100, 4101, 4102))
    aligned = build_grid(utm_aoi(500000, 4100000, 502000, 4102000)).cells
    assert len(aligned) == 4  # cells sharing only an edge with the AOI stay out


@pytest.mark.parametrize("scheme, origin", [("metric", (0.0, 0.0)), ("xyz", (1e5, 4.2e6))])
@pytest.mark.parametrize("min_overlap", [0.0, 0.3])
def test_selection_equals_brute_force_on_an_irregular_aoi(
    scheme: str, origin: tuple[float, float], min_overlap: float
) -> None:
    rng = np.random.default_rng(7)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radii = rng.uniform(2000, 9000, 40)
    star = shapely.Polygon(np.column_stack([500000 + radii * np.cos(angles),
                                            4100000 + radii * np.sin(angles)]))
    hole = shapely.Point(500000, 4100000).buffer(1500)  # inner rings are outlines too
    aoi = star.difference(hole)
    spec = GridSpec(scheme, UTM10, 700.0, origin, zoom=1)
    cols, rows = select_cells(aoi, spec, min_overlap)
    c0, c1, r0, r1 = spec.index_range(aoi.bounds)
    candidates = [(c, r) for c in range(c0, c1) for r in range(r0, r1)]
    boxes = spec.boxes(*(np.array(v) for v in zip(*candidates, strict=True)))
    overlap = [aoi.intersection(b).area / 700**2 for b in boxes]
    expected = {cell for cell, f in zip(candidates, overlap, strict=True)
                if f > 0 and f >= min_overlap}
    assert set(zip(cols.tolist(), rows.tolist(), strict=True)) == expected


def test_min_overlap_and_tiny_aoi_gives_one_cell() -> None:
    half = utm_aoi(500000, 4100000, 501500, 4101000)
    assert len(build_grid(half).cells) == 2
    assert list(build_grid(half, min_overlap=0.6).cells.cell_id) == ["32610-1000-E500-N4100"]
    tiny = utm_aoi(500400, 4100400, 500410, 4100410)
    assert len(build_grid(tiny).cells) == 1
    assert len(build_grid(tiny, min_overlap=0.9).cells) == 1  # never an empty grid
    with pytest.raises(InputError, match="fraction"):
        build_grid(tiny, min_overlap=1.5)


def test_real_city_is_fully_covered(shared_data: Path) -> None:
    path = shared_data / "boundaries" / "san-jose.geojson"
    cf = build_grid(path)
    cells = cf.cells
    aoi = gpd.GeoSeries([load_aoi(path).geometry], crs=4326).to_crs(cells.crs).iloc[0]
    assert cf.metadata["grid"]["crs"] == "EPSG:32610"
    assert cf.metadata["grid"]["n_cells"] == len(cells)
    assert cells.cell_id.is_unique
    assert shapely.area(shapely.intersection(cells.geometry.values, aoi)).min() > 0
    uncovered = aoi.difference(shapely.union_all(cells.geometry.values))
    assert uncovered.area < 1e-3 * aoi.area  # only densification slivers along the outline
    assert len(cells) >= aoi.area / 1e6


def test_antimeridian_bbox_and_split_polygons_give_the_same_compact_grid(tmp_path: Path) -> None:
    across = build_grid(bbox="179.5,-17,-179.5,-16")
    cells = across.cells
    assert across.metadata["grid"]["crs"] == "EPSG:32701"
    minx, _, maxx, _ = cells.total_bounds
    assert maxx - minx < 120_000  # ~107 km wide, not wrapped around the zone
    beside = build_grid(bbox="178.5,-17,179.5,-16").cells
    assert len(cells) == pytest.approx(len(beside), rel=0.05)
    halves = gpd.GeoDataFrame(geometry=[shapely.box(179.5, -17, 180, -16),
                                        shapely.box(-180, -17, -179.5, -16)], crs=4326)
    pyogrio.write_dataframe(halves, tmp_path / "fiji.gpkg")
    split = build_grid(tmp_path / "fiji.gpkg").cells
    assert set(split.cell_id) == set(cells.cell_id)


def test_near_poles_use_polar_stereographic() -> None:
    north = build_grid(bbox="-10,85,10,86", cell_size=5000)
    assert north.metadata["grid"]["crs"] == "EPSG:32661"
    south = build_grid(bbox="0,-89,10,-88", cell_size=5000)
    assert south.metadata["grid"]["crs"] == "EPSG:32761"
    cap = build_grid(bbox="-180,86,180,90", cell_size=20_000).cells
    rim = pyproj.Transformer.from_crs(4326, 32661, always_xy=True).transform(0, 86)
    radius = math.dist(rim, (2_000_000, 2_000_000)) / 20_000  # in cells
    # a disk of radius r meets between pi r^2 and pi (r + sqrt 2)^2 unit cells
    assert math.pi * radius**2 < len(cap) < math.pi * (radius + math.sqrt(2)) ** 2
    assert shapely.contains_xy(shapely.union_all(cap.geometry.values), 2_000_000, 2_000_000)
    reaching_pole = build_grid(bbox="-180,83,180,90", cell_size=50_000)  # centroid below 84°
    assert reaching_pole.metadata["grid"]["crs"] == "EPSG:32661"
    with pytest.raises(GeometryError, match=r"\+proj=laea \+lon_0=0.00 \+lat_0=90.00"):
        build_grid(bbox="-180,70,180,90", cell_size=50_000)


def test_aoi_drawn_in_a_polar_crs_is_gridded_as_drawn() -> None:
    arctic = pyproj.CRS.from_epsg(3413)  # NSIDC polar stereographic north, metres
    cap = AOI(shapely.Point(0, 0).buffer(300_000), arctic, "cap around the pole")
    cells = build_grid(cap, crs="EPSG:3413", cell_size=25_000).cells
    assert cells.crs.equals(arctic)
    assert shapely.contains_xy(shapely.union_all(cells.geometry.values), 0, 0)
    assert math.pi * 12**2 < len(cells) < math.pi * (12 + math.sqrt(2)) ** 2


def test_polar_aoi_around_the_pole_is_fully_gridded_in_the_automatic_crs() -> None:
    """A 300 km disk around the North Pole drawn in EPSG:3413 must not pass through lon/lat
    (where its outline becomes a line of constant latitude and the disk collapses)."""
    arctic = pyproj.CRS.from_epsg(3413)
    disk = AOI(shapely.Point(0, 0).buffer(300_000, quad_segs=64), arctic, "disk around the pole")
    cf = build_grid(disk, cell_size=10_000)
    assert cf.metadata["grid"]["crs"] == "EPSG:32661"
    to_ups = pyproj.Transformer.from_crs(arctic, 32661, always_xy=True)
    rim = [to_ups.transform(300_000 * math.cos(a), 300_000 * math.sin(a))
           for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]
    radius = np.mean([math.dist(p, (2_000_000, 2_000_000)) for p in rim]) / 10_000  # in cells
    cells = cf.cells
    assert math.pi * radius**2 < len(cells) < math.pi * (radius + math.sqrt(2)) ** 2  # ~2,800
    assert shapely.contains_xy(shapely.union_all(cells.geometry.values), 2_000_000, 2_000_000)
    with pytest.raises(GeometryError, match="pole.*--scheme metric"):
        build_grid(disk, scheme="xyz", zoom=5)


def test_aoi_file_and_crs_are_recorded_for_later_audits(tmp_path: Path) -> None:
    path = tmp_path / "two.gpkg"
    frame = gpd.GeoDataFrame(geometry=[shapely.box(-122.1, 37.6, -122.05, 37.65)], crs=4326)
    pyogrio.write_dataframe(frame, path, layer="b")
    pyogrio.write_dataframe(frame, path, layer="a")
    meta = build_grid(path, layer="a").metadata["grid"]
    assert (meta["aoi_source"], meta["aoi_layer"], meta["aoi_crs"]) == (
        str(path.resolve()), "a", "EPSG:4326")
    meta = build_grid(bbox="500000,4100000,502000,4102000", bbox_crs="EPSG:32610").metadata
    assert meta["grid"]["aoi_crs"] == "EPSG:32610" and meta["grid"]["aoi_layer"] is None


def test_multi_zone_aoi_accepted_when_near_meridian_else_refused_with_advice() -> None:
    two_zones = build_grid(bbox="-126,40,-120,40.5", cell_size=5000)
    assert two_zones.metadata["grid"]["crs"] == "EPSG:32610"
    assert two_zones.metadata["grid"]["max_scale_error"] < 0.01
    with pytest.raises(GeometryError, match=r"--crs '\+proj=tmerc.*split the AOI|Split the AOI"):
        build_grid(bbox="-130,0,-110,1", cell_size=10_000)
    custom = build_grid(bbox="-130,0,-110,1", cell_size=10_000,
                        crs="+proj=tmerc +lon_0=-120 +datum=WGS84 +units=m")
    assert re.fullmatch(r"crs[0-9a-f]{8}-10000-E-?\d+-N-?\d+", custom.cells.cell_id.iloc[0])


@pytest.mark.parametrize("crs, match", [("EPSG:4326", "geographic.*EPSG:32610"),
                                        ("EPSG:2227", "not in metres")])
def test_unusable_user_crs_is_refused(crs: str, match: str) -> None:
    with pytest.raises(CRSError, match=match):
        build_grid(bbox="-122.23,37.57,-122.05,37.67", crs=crs)


def test_user_crs_in_metres_is_used() -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67", crs="EPSG:3310")
    assert cf.cells.crs.to_epsg() == 3310 and cf.cells.cell_id.iloc[0].startswith("3310-1000-")


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return int((lon + 180) / 360 * n), int(y)


def test_xyz_tiles_match_slippy_map_numbering_and_report_ground_size() -> None:
    progress = RecordingProgress()
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67", scheme="xyz", zoom=15, progress=progress)
    cells, meta = cf.cells, cf.metadata["grid"]
    x, y = _tile(-122.1, 37.6, 15)
    assert f"z15-x{x}-y{y}" in set(cells.cell_id)
    tile = 2 * math.pi * 6378137 / 2**15
    assert meta["cell_size_m"] == pytest.approx(tile)
    ground = tile * math.cos(math.radians(37.62))
    assert meta["ground_cell_size_m"] == pytest.approx(ground, rel=1e-3)
    assert any("on the ground" in m for m in progress.infos)
    corner = cells.set_index("cell_id").loc[f"z15-x{x}-y{y}"].geometry.bounds
    assert corner[0] == pytest.approx(-math.pi * 6378137 + x * tile)
    assert corner[3] == pytest.approx(math.pi * 6378137 - y * tile)


def test_xyz_across_antimeridian_and_beyond_mercator() -> None:
    cells = build_grid(bbox="179.9,-17,-179.9,-16.9", scheme="xyz", zoom=10).cells
    assert {0, 2**10 - 1} <= set(cells.col)
    with pytest.raises(GeometryError, match="--scheme metric"):
        build_grid(bbox="0,86,1,87", scheme="xyz", zoom=5)


@pytest.mark.parametrize("kwargs, match", [
    ({"zoom": 12}, "--zoom only applies"),
    ({"scheme": "xyz"}, "needs --zoom"),
    ({"scheme": "xyz", "zoom": 30}, "needs --zoom"),
    ({"cell_size": 0}, "positive"),
    ({"scheme": "hex"}, "unknown grid scheme"),
    ({"scheme": "xyz", "zoom": 3, "crs": "EPSG:32610"}, "does not apply"),
    ({"cell_size": 0.001}, "larger --cell-size"),
])
def test_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        build_grid(bbox="-122.23,37.57,-122.05,37.67", **kwargs)


def test_exactly_one_aoi() -> None:
    with pytest.raises(InputError, match="exactly one AOI"):
        build_grid()
    with pytest.raises(InputError, match="exactly one AOI"):
        build_grid("x.geojson", bbox="0,0,1,1")
