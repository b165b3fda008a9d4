"""Indicator alignment: totals preserved across CRSs, nodata ignored, uncovered cells NaN."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio import features
from rasterio.transform import from_origin
from recording import RecordingProgress

from urbangeo.errors import CRSError, DataError, InputError, NoOverlapError
from urbangeo.geo.aoi import AOI
from urbangeo.geo.cells import CellsFile, read_cells, write_cells
from urbangeo.geo.grid import build_grid
from urbangeo.geo.indicators import IndicatorSpec, add_indicators

# A 1 km x 1 km raster of 10 m pixels in UTM 33N, origin (500000, 4650000) at the top left.
X0, Y0, PX, N = 500_000.0, 4_650_000.0, 10.0, 100


def _raster(path: Path, values: np.ndarray, *, crs: str | None = "EPSG:32633",
            nodata: float | None = -9999.0) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0],
                       count=1, dtype="float32", crs=crs, nodata=nodata,
                       transform=from_origin(X0, Y0, PX, PX)) as ds:
        ds.write(values.astype("float32"), 1)
    return path


def _cells(boxes: list[tuple[float, float, float, float]], crs: str = "EPSG:32633") -> CellsFile:
    frame = gpd.GeoDataFrame(
        {"cell_id": [f"c{i}" for i in range(len(boxes))], "row": 0, "col": list(range(len(boxes)))},
        geometry=[shapely.box(*b) for b in boxes], crs=crs,
    )
    return CellsFile(cells=frame, metadata={"grid": {"crs": crs}})


@pytest.fixture
def ones(tmp_path: Path) -> Path:
    return _raster(tmp_path / "ones.tif", np.ones((N, N)))


def test_sum_of_ones_counts_pixels_and_half_covered_cell(ones: Path) -> None:
    inside = (X0 + 100, Y0 - 300, X0 + 300, Y0 - 100)  # 200 m square: 400 pixels
    half = (X0 - 50, Y0 - 600, X0 + 50, Y0 - 500)       # half its area off the raster's west edge
    out, report = add_indicators(_cells([inside, half]), [IndicatorSpec("pop", ones, "sum")])
    assert out.cells["pop"].tolist() == pytest.approx([400.0, 50.0])
    result = report.results[0]
    assert (result.n_with_values, result.n_partial) == (2, 1)
    assert result.cells_value == pytest.approx(450.0)
    assert result.raster_value_in_cells == pytest.approx(450.0)


def test_uncovered_cells_are_nan_not_zero(ones: Path) -> None:
    far = (X0 + 5000, Y0 - 5000, X0 + 5100, Y0 - 4900)
    out, report = add_indicators(_cells([(X0, Y0 - 100, X0 + 100, Y0), far]),
                                 [IndicatorSpec("pop", ones)])
    assert out.cells["pop"].iloc[0] == pytest.approx(100.0)
    assert np.isnan(out.cells["pop"].iloc[1])
    assert report.results[0].n_without_values == 1


def test_nodata_pixels_are_ignored_by_sum_and_mean(tmp_path: Path) -> None:
    values = np.full((N, N), 3.0)
    values[:10, :10] = -9999.0  # the top-left 100 m x 100 m block is nodata
    raster = _raster(tmp_path / "dens.tif", values)
    cell = [(X0, Y0 - 200, X0 + 200, Y0)]  # 400 pixels, 100 of them nodata
    out, _ = add_indicators(_cells(cell), [IndicatorSpec("s", raster, "sum"),
                                           IndicatorSpec("m", raster, "mean")])
    assert out.cells["s"].iloc[0] == pytest.approx(300 * 3.0)
    assert out.cells["m"].iloc[0] == pytest.approx(3.0)


def test_float32_min_nodata_like_the_san_jose_rasters(tmp_path: Path) -> None:
    nodata = float(np.finfo("float32").min)
    values = np.full((N, N), 2.0)
    values[:, :50] = nodata
    raster = _raster(tmp_path / "f32.tif", values, nodata=nodata)
    out, _ = add_indicators(_cells([(X0, Y0 - 100, X0 + 1000, Y0)]), [IndicatorSpec("p", raster)])
    assert out.cells["p"].iloc[0] == pytest.approx(500 * 2.0)


def test_streamed_rasters_match_in_memory_windows(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rasters too big to read at once are streamed by exactextract: same answers."""
    import urbangeo.geo.indicators as indicators

    values = np.arange(N * N, dtype=float).reshape(N, N) % 7
    values[40:60, 40:60] = -9999.0
    raster = _raster(tmp_path / "v.tif", values)
    cells = _cells([(X0 + 333, Y0 - 777, X0 + 555, Y0 - 333), (X0 - 50, Y0 - 90, X0 + 50, Y0)])
    specs = [IndicatorSpec("s", raster, "sum"), IndicatorSpec("m", raster, "mean")]
    in_memory, _ = add_indicators(cells, specs)
    monkeypatch.setattr(indicators, "_MAX_WINDOW_PX", 0)
    streamed, _ = add_indicators(cells, specs)
    for column in ("s", "m"):
        expected = in_memory.cells[column].to_numpy()
        assert streamed.cells[column].to_numpy() == pytest.approx(expected)


def test_only_nodata_under_cells_is_a_data_error(tmp_path: Path) -> None:
    raster = _raster(tmp_path / "empty.tif", np.full((N, N), -9999.0))
    with pytest.raises(DataError, match="only nodata"):
        add_indicators(_cells([(X0, Y0 - 100, X0 + 100, Y0)]), [IndicatorSpec("p", raster)])


def test_mean_of_a_constant_is_the_constant_across_crs(tmp_path: Path) -> None:
    raster = _raster(tmp_path / "c.tif", np.full((N, N), 7.5))
    # A cell in web mercator well inside the raster (raster is in UTM 33N).
    centre = gpd.GeoSeries([shapely.Point(X0 + 500, Y0 - 500)], crs="EPSG:32633").to_crs(3857)[0]
    box = (centre.x - 200, centre.y - 200, centre.x + 200, centre.y + 200)
    cells = _cells([box], crs="EPSG:3857")
    out, report = add_indicators(cells, [IndicatorSpec("d", raster, "mean")])
    assert out.cells["d"].iloc[0] == pytest.approx(7.5)
    assert report.results[0].raster_crs == "EPSG:32633"


def test_sum_across_crs_equals_reprojected_area(ones: Path) -> None:
    """Cells in LAEA Europe over a raster of ones in UTM: sum = true area in pixels."""
    centre = gpd.GeoSeries([shapely.Point(X0 + 500, Y0 - 500)], crs="EPSG:32633").to_crs(3035)[0]
    box = shapely.box(centre.x - 300, centre.y - 300, centre.x + 300, centre.y + 300)
    out, _ = add_indicators(_cells([box.bounds], crs="EPSG:3035"), [IndicatorSpec("n", ones)])
    fine = gpd.GeoSeries([shapely.segmentize(box, 1.0)], crs="EPSG:3035").to_crs(32633)[0]
    assert out.cells["n"].iloc[0] == pytest.approx(fine.area / PX**2, rel=1e-6)


def _geographic(path: Path, values: np.ndarray, west: float, north: float, px: float) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0],
                       count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(west, north, px, px)) as ds:
        ds.write(values.astype("float32"), 1)
    return path


def test_big_cells_follow_curved_edges_on_a_geographic_raster(tmp_path: Path) -> None:
    """A 400 km polar-stereographic square bows in lon/lat: straight chords would be off."""
    raster = _geographic(tmp_path / "ones.tif", np.ones((700, 2500)), -50.0, 77.0, 0.01)
    square = shapely.box(0, -2_000_000, 400_000, -1_600_000)  # EPSG:3413, Greenland 71-75 N
    out, _ = add_indicators(_cells([square.bounds], crs="EPSG:3413"), [IndicatorSpec("n", raster)])
    true = gpd.GeoSeries([shapely.segmentize(square, 100.0)], crs="EPSG:3413").to_crs(4326)[0]
    chord = gpd.GeoSeries([square], crs="EPSG:3413").to_crs(4326)[0]
    expected, naive = true.area / 0.01**2, chord.area / 0.01**2
    assert abs(naive - expected) / expected > 5e-4  # the test can tell the two apart
    assert out.cells["n"].iloc[0] == pytest.approx(expected, rel=1e-5)


def test_mean_on_a_geographic_raster_weights_by_true_area(tmp_path: Path) -> None:
    values = np.zeros((20, 10))
    values[:10] = 1.0  # 1 north of 60 N, 0 south of it; northern pixels are smaller
    raster = _geographic(tmp_path / "half.tif", values, 0.0, 70.0, 1.0)
    out, report = add_indicators(_cells([(0, 50, 10, 70)], crs="EPSG:4326"),
                                 [IndicatorSpec("d", raster, "mean")])
    lat = np.radians([50, 60, 70])
    expected = (np.sin(lat[2]) - np.sin(lat[1])) / (np.sin(lat[2]) - np.sin(lat[0]))
    assert out.cells["d"].iloc[0] == pytest.approx(expected, rel=2e-3)  # 0.424, not 0.5
    assert report.results[0].cells_value == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("raster_crs", ["EPSG:4326", "EPSG:3857"])
def test_cells_across_the_antimeridian_sum_both_sides(tmp_path: Path, raster_crs: str) -> None:
    """UTM cells straddling 180° over a world-wide raster of ones: each cell sums to its own
    area in pixels (not a band around the globe), and the total is preserved."""
    cells = build_grid(bbox="179.9,-17,-179.9,-16.9")
    meridian = gpd.GeoSeries([shapely.LineString([(180, -18), (180, -15)])], crs=4326)
    crosses = shapely.intersects(cells.cells.geometry.values,
                                 meridian.to_crs(cells.cells.crs).iloc[0])
    if raster_crs == "EPSG:4326":
        px, west, north, shape = 0.05, -180.0, -15.0, (60, 7200)
        raster = _geographic(tmp_path / "ones.tif", np.ones(shape), west, north, px)
    else:
        half = math.pi * 6378137.0
        px = 2 * half / 8000  # ~5 km pixels spanning the world exactly
        raster = tmp_path / "ones3857.tif"
        with rasterio.open(raster, "w", driver="GTiff", width=8000, height=80, count=1,
                           dtype="float32", crs=raster_crs,
                           transform=from_origin(-half, -1_650_000.0, px, px)) as ds:
            ds.write(np.ones((1, 80, 8000), "float32"))
    out, report = add_indicators(cells, [IndicatorSpec("n", raster)])
    # Independent reference: geodesic cell area over the geodesic (or mercator) pixel area.
    geod = pyproj.Geod(ellps="WGS84")
    lonlat = gpd.GeoSeries(shapely.segmentize(cells.cells.geometry.values, 100.0),
                           crs=cells.cells.crs).to_crs(4326)
    lat = np.radians(cells.cells.centroid.to_crs(4326).y.to_numpy())
    area = np.abs([geod.geometry_area_perimeter(g)[0] for g in lonlat])
    if raster_crs == "EPSG:4326":
        pixel = np.abs([geod.polygon_area_perimeter([0, px, px, 0], [y - px / 2, y - px / 2,
                                                                    y + px / 2, y + px / 2])[0]
                        for y in np.degrees(lat)])
    else:  # a mercator pixel on the ground: scaled by a cos(lat) / N east-west, / M north-south
        e2 = geod.es
        n = geod.a / np.sqrt(1 - e2 * np.sin(lat) ** 2)
        m = n * (1 - e2) / (1 - e2 * np.sin(lat) ** 2)
        pixel = px**2 * n * m * np.cos(lat) ** 2 / geod.a**2
    expected = area / pixel
    assert crosses.sum() >= 5  # the test holds cells on both sides of 180°
    assert out.cells["n"].to_numpy() == pytest.approx(expected, rel=2e-3)
    assert report.results[0].cells_value == pytest.approx(expected.sum(), rel=2e-3)
    assert report.results[0].raster_value_in_cells == pytest.approx(expected.sum(), rel=2e-3)


def test_cells_around_a_pole_on_a_lon_lat_raster_are_refused(tmp_path: Path) -> None:
    raster = _geographic(tmp_path / "arctic.tif", np.ones((20, 360)), -180.0, 90.0, 1.0)
    cap = build_grid(bbox="-180,89.5,180,90", cell_size=20_000)
    with pytest.raises(CRSError, match="pole.*gdalwarp"):
        add_indicators(cap, [IndicatorSpec("n", raster)])
    # A ring of cells leaving the pole out is fine; only its union (around the pole) is not.
    ring = shapely.Point(2_000_000, 2_000_000).buffer(100_000).difference(
        shapely.Point(2_000_000, 2_000_000).buffer(50_000))
    cells = build_grid(AOI(ring, pyproj.CRS.from_epsg(32661), "ring"), cell_size=20_000)
    recorder = RecordingProgress()
    out, report = add_indicators(cells, [IndicatorSpec("n", raster)], progress=recorder)
    assert (out.cells["n"] > 0).all()
    assert math.isnan(report.results[0].raster_value_in_cells)
    assert any("pole" in m for m in recorder.infos)


def test_progress_counts_every_cell(ones: Path) -> None:
    boxes = [(X0 + 10 * i, Y0 - 10, X0 + 10 * i + 10, Y0) for i in range(50)]
    recorder = RecordingProgress()
    add_indicators(_cells(boxes), [IndicatorSpec("p", ones)], progress=recorder)
    assert recorder.events[0][2] == 50 and recorder.events[-1] == ("finish",)
    assert recorder.advanced == 50


def test_no_overlap_and_missing_crs_are_refused(tmp_path: Path, ones: Path) -> None:
    far = [(X0 + 1e5, Y0 - 1e5, X0 + 1e5 + 100, Y0 - 1e5 + 100)]
    with pytest.raises(NoOverlapError, match="does not overlap"):
        add_indicators(_cells(far), [IndicatorSpec("p", ones)])
    with pytest.raises(InputError, match="no cells"):
        add_indicators(_cells([]), [IndicatorSpec("p", ones)])
    bare = _raster(tmp_path / "nocrs.tif", np.ones((N, N)), crs=None)
    with pytest.raises(CRSError, match="no CRS"):
        add_indicators(_cells([(X0, Y0 - 100, X0 + 100, Y0)]), [IndicatorSpec("p", bare)])


def test_parse_spec(ones: Path) -> None:
    assert IndicatorSpec.parse(f"pop={ones}") == IndicatorSpec("pop", ones, "sum")
    assert IndicatorSpec.parse(f"d={ones}:mean").stat == "mean"
    assert IndicatorSpec.parse(f"d={ones}:MEAN").stat == "mean"
    with pytest.raises(InputError, match="unknown statistic 'median'"):
        IndicatorSpec.parse(f"pop={ones}:median")
    for bad, message in [("pop", "NAME=RASTER"), (f"cell_id={ones}", "already uses"),
                         (f"9pop={ones}", "not a usable column"),
                         ("pop=/no/such.tif", "does not exist"),
                         (f"Geometry={ones}:sum", "already uses")]:
        with pytest.raises(InputError, match=message):
            IndicatorSpec.parse(bad)


def test_parse_keeps_colons_inside_paths(tmp_path: Path) -> None:
    odd = _raster(tmp_path / "a:b.tif", np.ones((2, 2)))  # like C:\data\pop.tif on Windows
    assert IndicatorSpec.parse(f"pop={odd}").raster == odd
    assert IndicatorSpec.parse(f"pop={odd}:mean") == IndicatorSpec("pop", odd, "mean")


def test_columns_metadata_rerun_and_clashes(tmp_path: Path, ones: Path) -> None:
    cf, _ = add_indicators(_cells([(X0, Y0 - 100, X0 + 100, Y0)]), [IndicatorSpec("pop", ones)])
    path = tmp_path / "cells.gpkg"
    write_cells(path, cf)
    back = read_cells(path)
    assert back.cells["pop"].dtype.kind == "f"
    meta = back.metadata["indicators"]["pop"]
    assert (meta["stat"], meta["raster_crs"]) == ("sum", "EPSG:32633")
    assert meta["raster"] == str(ones.resolve())
    assert meta["cells_total"] == pytest.approx(meta["raster_total_in_cells"])
    rerun, _ = add_indicators(back, [IndicatorSpec("POP", ones, "mean")])  # replaces, any case
    assert "pop" not in rerun.cells.columns and rerun.cells["POP"].iloc[0] == pytest.approx(1.0)
    assert set(rerun.metadata["indicators"]) == {"POP"}
    back.cells["note"] = 1.0
    with pytest.raises(InputError, match="not an indicator"):
        add_indicators(back, [IndicatorSpec("note", ones)])
    with pytest.raises(InputError, match="repeat"):
        add_indicators(back, [IndicatorSpec("a", ones), IndicatorSpec("A", ones)])


# ---- real data: San Jose population (EPSG:32610) -------------------------------------

def _supersampled_totals(raster: Path, polygons: gpd.GeoSeries, factor: int = 40) -> np.ndarray:
    """Reference independent of exactextract: burn polygon ids on a grid `factor` times finer
    than the raster and spread each pixel's count evenly over its sub-pixels."""
    with rasterio.open(raster) as ds:
        values = ds.read(1, masked=True).filled(0).astype(np.float64)
        fine = ds.transform @ Affine.scale(1 / factor)
        shape = (ds.height * factor, ds.width * factor)
        geoms = polygons.to_crs(ds.crs)
    ids = features.rasterize(((g, i + 1) for i, g in enumerate(geoms)), out_shape=shape,
                             transform=fine, fill=0, dtype="int32")
    share = np.repeat(np.repeat(values, factor, 0), factor, 1) / factor**2
    return np.bincount(ids.ravel(), weights=share.ravel(), minlength=len(geoms) + 1)[1:]


def _clipped_to_aoi(cf: CellsFile, aoi: shapely.Geometry) -> CellsFile:
    """The same cells (and grid metadata) cut to the AOI: together they tile it exactly."""
    cells = cf.cells.copy()
    cells.geometry = cells.geometry.intersection(aoi)
    return CellsFile(cells=cells, metadata=cf.metadata)


@pytest.mark.shared_data
def test_san_jose_totals_preserved_across_crs(shared_data: Path) -> None:
    """Cells in California Albers (EPSG:3310) over the population raster in UTM 10N."""
    raster = shared_data / "sanjose" / "sanjose_ghs_pop_count_1km.tif"
    boundary = shared_data / "boundaries" / "san-jose.geojson"
    grid = build_grid(boundary, crs="EPSG:3310")
    assert grid.cells.crs.to_epsg() == 3310
    aoi = gpd.read_file(boundary).to_crs(3310).union_all()
    out, report = add_indicators(_clipped_to_aoi(grid, aoi),
                                 [IndicatorSpec.parse(f"pop={raster}:sum")])
    inside_aoi = _supersampled_totals(raster, gpd.GeoSeries([aoi], crs="EPSG:3310"))[0]
    assert inside_aoi > 500_000  # the reference saw San Jose's population
    assert out.cells["pop"].sum() == pytest.approx(inside_aoi, rel=0.005)
    assert report.results[0].raster_value_in_cells == pytest.approx(inside_aoi, rel=0.005)

    # Whole (unclipped) squares: every cell agrees with the supersampled reference.
    squares = grid.cells.geometry
    whole, _ = add_indicators(grid, [IndicatorSpec("pop", raster)])
    reference = _supersampled_totals(raster, squares)
    got = whole.cells["pop"].fillna(0).to_numpy()
    assert got.sum() == pytest.approx(reference.sum(), rel=0.001)
    big = reference > 1000
    assert np.abs(got[big] - reference[big]).max() <= 0.01 * reference[big].max()


@pytest.mark.shared_data
def test_done_when_grid_then_indicators_reports_the_total_inside_the_aoi(
        shared_data: Path, tmp_path: Path) -> None:
    """`urbangeo grid san-jose.geojson` then `indicators`: the cells cut to the AOI hold the
    raster's total inside the AOI, and the tool reports that total from the grid's AOI."""
    raster = shared_data / "sanjose" / "sanjose_uspop_count_1km.tif"
    boundary = shared_data / "boundaries" / "san-jose.geojson"
    grid = build_grid(boundary)  # automatic CRS: UTM 10N, cells not aligned with the pixels
    path = tmp_path / "cells.gpkg"
    write_cells(path, grid)
    spec = IndicatorSpec("pop", raster)
    out, report = add_indicators(read_cells(path), [spec])
    aoi = gpd.read_file(boundary).to_crs(grid.cells.crs).union_all()
    inside_aoi = _supersampled_totals(raster, gpd.GeoSeries([aoi], crs=grid.cells.crs))[0]
    assert inside_aoi > 500_000
    result = report.results[0]
    assert result.raster_value_in_aoi == pytest.approx(inside_aoi, rel=0.005)
    assert result.raster_value_in_cells > 1.05 * inside_aoi  # whole cells reach past the AOI
    assert out.metadata["indicators"]["pop"]["raster_total_in_aoi"] == result.raster_value_in_aoi
    clipped, _ = add_indicators(_clipped_to_aoi(grid, aoi), [spec])
    assert clipped.cells["pop"].sum() == pytest.approx(inside_aoi, rel=0.005)


def test_aoi_total_from_a_bbox_grid_and_a_missing_aoi_file(tmp_path: Path, ones: Path) -> None:
    utm33 = f"{X0 + 150},{Y0 - 450},{X0 + 450},{Y0 - 150}"  # 300 m square: 900 pixels
    grid = build_grid(bbox=utm33, bbox_crs="EPSG:32633", cell_size=100)
    _, report = add_indicators(grid, [IndicatorSpec("n", ones)])
    assert report.results[0].raster_value_in_aoi == pytest.approx(900.0)
    assert report.results[0].raster_value_in_cells == pytest.approx(1600.0)  # 4 x 4 cells
    grid.metadata["grid"] = {**grid.metadata["grid"], "aoi_source": str(tmp_path / "gone.gpkg")}
    recorder = RecordingProgress()
    _, report = add_indicators(grid, [IndicatorSpec("n", ones)], progress=recorder)
    assert report.results[0].raster_value_in_aoi is None
    assert any("gone.gpkg" in m for m in recorder.infos)


# ---- CLI: `urbangeo indicators` ----------------------------------------------------------

def test_cli_indicators_adds_columns_and_prints_summary(tmp_path: Path, ones: Path) -> None:
    from click.testing import CliRunner

    from urbangeo.cli.main import cli

    path = tmp_path / "cells.gpkg"
    write_cells(path, _cells([(X0, Y0 - 100, X0 + 100, Y0), (X0 + 5000, Y0, X0 + 5100, Y0 + 100)]))
    result = CliRunner().invoke(cli, ["--progress", "none", "indicators", str(path),
                                      "--indicator", f"pop={ones}:sum"])
    assert result.exit_code == 0, result.output
    assert "pop (sum): 1/2 cells with values, total 100" in result.output
    assert "1 without data (NaN)" in result.output
    assert read_cells(path).cells["pop"].iloc[0] == pytest.approx(100.0)


def test_cli_indicator_mistake_is_one_line_and_leaves_file(tmp_path: Path, ones: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from urbangeo.cli.main import main

    path = tmp_path / "cells.gpkg"
    write_cells(path, _cells([(X0, Y0 - 100, X0 + 100, Y0)]))
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["--progress", "none", "indicators", str(path), "--indicator", "pop=/no/pop.tif"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: indicator 'pop': raster /no/pop.tif does not exist")
    assert "Traceback" not in err and err.count("\n") == 1
    far = tmp_path / "far.tif"
    with rasterio.open(far, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(0, 100, 10, 10)) as ds:
        ds.write(np.ones((1, 4, 4), "float32"))
    with pytest.raises(SystemExit):
        main(["--progress", "none", "indicators", str(path), "--indicator", f"pop={far}"])
    assert "does not overlap" in capsys.readouterr().err
    assert path.read_bytes() == before
