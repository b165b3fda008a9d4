"""The bundled synthetic city and `urbangeo demo` on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from pyproj import Transformer

from urbangeo.captions.landcover import measure
from urbangeo.errors import InputError
from urbangeo.sample import CLASSES, SampleCity, make_synthetic_city
from urbangeo.sample.synthetic_city import (
    DOWNTOWN,
    FARMLAND,
    INDUSTRIAL,
    PARK,
    PIXEL_M,
    ROAD,
    WATER,
)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> SampleCity:
    return make_synthetic_city(tmp_path_factory.mktemp("city"), seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_city(tmp_path: Path) -> None:
    a = make_synthetic_city(tmp_path / "a", seed=3, size_km=2)
    b = make_synthetic_city(tmp_path / "b", seed=3, size_km=2)
    c = make_synthetic_city(tmp_path / "c", seed=4, size_km=2)
    files = _files(a.out_dir)
    assert set(files) == {"imagery.tif", "landuse.tif", "population.tif", "gdp.tif",
                          "carbon.tif", "aoi.geojson"}
    assert files == _files(b.out_dir)
    with rasterio.open(a.imagery) as ra, rasterio.open(c.imagery) as rc:
        assert not np.array_equal(ra.read(), rc.read())


def test_size_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="1 to 20 km"):
        make_synthetic_city(tmp_path, size_km=0.2)


def test_advertised_crs_resolution_and_synthetic_tags(city: SampleCity) -> None:
    with rasterio.open(city.imagery) as ds:
        assert (ds.crs.to_epsg(), ds.count, ds.width, ds.dtypes[0]) == (32633, 4, 1536, "uint8")
        assert ds.res == pytest.approx((1000 / 256, 1000 / 256))
        assert ds.descriptions == ("red", "green", "blue", "nir")
        assert ds.overviews(1) == [2, 4, 8]
    for path, epsg, units in [(city.population, 4326, "people"), (city.gdp, 3035, None),
                              (city.carbon, 3035, "t CO2/yr"), (city.landuse, 32633, None)]:
        with rasterio.open(path) as ds:
            assert ds.crs.to_epsg() == epsg
            assert ds.tags()["SYNTHETIC"] == "yes"
            if units:
                assert ds.units[0] == units
    assert pyogrio.read_info(city.aoi)["crs"] == "EPSG:4326"


def test_every_land_use_class_is_present(city: SampleCity) -> None:
    with rasterio.open(city.landuse) as ds:
        share = np.bincount(ds.read(1).ravel(), minlength=len(CLASSES)) / (ds.width * ds.height)
    assert len(share) == len(CLASSES)
    assert (share > 0.005).all(), dict(zip(CLASSES, share.round(4), strict=True))


def _class_at(city: SampleCity, raster: Path) -> tuple[np.ndarray, np.ndarray]:
    """Values of a count raster and the land-use class under each of its pixel centres."""
    with rasterio.open(raster) as ds:
        values = ds.read(1, masked=True)
        rows, cols = np.nonzero(~np.ma.getmaskarray(values))
        xs, ys = rasterio.transform.xy(ds.transform, rows, cols)
        xs, ys = Transformer.from_crs(ds.crs, "EPSG:32633", always_xy=True).transform(xs, ys)
    with rasterio.open(city.landuse) as lu:
        r, c = rasterio.transform.rowcol(lu.transform, xs, ys)
        r, c = np.clip(r, 0, lu.height - 1), np.clip(c, 0, lu.width - 1)
        classes = lu.read(1)[r, c]
    return values.compressed(), classes


def test_population_is_denser_downtown_than_in_parks(city: SampleCity) -> None:
    values, classes = _class_at(city, city.population)
    downtown, parks = values[classes == DOWNTOWN].mean(), values[classes == PARK].mean()
    assert downtown > 3 * parks
    assert values.sum() > 10_000  # a city, not a village


def test_vegetation_is_bright_in_nir_and_water_dark(city: SampleCity) -> None:
    with rasterio.open(city.imagery) as ds, rasterio.open(city.landuse) as lu:
        red, nir = ds.read(1).astype(float), ds.read(4).astype(float)
        classes = lu.read(1)
    ndvi = (nir - red) / (nir + red)
    assert ndvi[classes == PARK].mean() > 0.2
    assert ndvi[classes == WATER].mean() < 0
    assert nir[classes == PARK].mean() > 2 * nir[classes == ROAD].mean()
    with rasterio.open(city.imagery) as ds:
        green = ds.read(2).astype(float)
    ndwi = (green - nir) / (green + nir)
    # asphalt and concrete are spectrally flat: nowhere near water's NDWI
    for paved in (ROAD, DOWNTOWN, INDUSTRIAL):
        assert np.percentile(ndwi[classes == paved], 99) < 0.15, CLASSES[paved]
    assert np.percentile(ndwi[classes == WATER], 1) > 0.3


# Land cover each land use shows from above (water, vegetation, built): a residential block is
# about half roofs and paving, half gardens; suburbs are mostly lawn and trees; farmland is
# fields (some fallow, i.e. bare, which the land-use raster cannot tell).
_COVER_OF_USE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0.5, 0.5], [0, 1, 0],
                          [0, 0, 1], [0, 0, 1], [0, 1, 0]])


def test_describe_land_cover_agrees_with_land_use_per_cell(city: SampleCity) -> None:
    """Per 1 km chip (as `urbangeo demo` cuts them), the describe backend's fractions follow the
    ground truth: dark roofs, shadows and asphalt are not water, pavement is not bare ground."""
    with rasterio.open(city.imagery) as ds, rasterio.open(city.landuse) as lu:
        image, classes = ds.read(), lu.read(1)
    tile = 256
    dominant_ok, n = 0, 0
    for r in range(0, classes.shape[0] - tile + 1, tile):
        for c in range(0, classes.shape[1] - tile + 1, tile):
            cover = measure(image[:, r:r + tile, c:c + tile], ("red", "green", "blue", "nir"),
                            pixel_size_m=PIXEL_M)
            use = np.bincount(classes[r:r + tile, c:c + tile].ravel(),
                              minlength=len(CLASSES)) / tile**2
            truth = dict(zip(("water", "vegetation", "built"), use @ _COVER_OF_USE, strict=True))
            where = f"cell row {r // tile} col {c // tile}: {cover.fractions} vs {truth}"
            assert abs(cover.fractions["water"] - truth["water"]) < 0.1, where
            assert abs(cover.fractions["built"] - truth["built"]) < 0.15, where
            assert cover.fractions["bare"] < 0.2 + use[FARMLAND], where
            dominant_ok += cover.dominant == max(truth, key=truth.__getitem__)
            n += 1
    assert n == 36 and dominant_ok >= 0.9 * n


@pytest.mark.slow  # about a minute (shared with test_api); still runs by default
def test_demo_end_to_end(demo_run) -> None:
    from urbangeo.cli.main import cli
    from urbangeo.geo.cells import read_cells

    run, _ = demo_run
    out = run.out_dir
    cf = read_cells(out / "cells.gpkg")
    cells = cf.cells
    assert len(cells) == 576 and bool(cells["has_chip"].all())
    for name in ("population", "gdp", "carbon"):
        assert cells[name].notna().all()
        meta = cf.metadata["indicators"][name]
        assert cells[name].sum() == pytest.approx(meta["raster_total_in_cells"], rel=1e-6)
    with rasterio.open(out / "sample" / "population.tif") as ds:
        raster_total = float(ds.read(1, masked=True).sum())
    # Cells tile the whole city; only border pixels' share beyond the city is lost.
    assert cells["population"].sum() == pytest.approx(raster_total, rel=0.01)
    assert cf.metadata["chips"]["band_names"][3] == "nir"
    with rasterio.open(out / "population.tif") as ds:
        assert ds.count == 1 and ds.width == 24
    # train -> predict -> evaluate
    assert (out / "model" / "model.safetensors").is_file()
    predictions = pyogrio.read_dataframe(out / "predictions.gpkg", layer="predictions")
    assert len(predictions) == 576 and predictions["population_pred"].notna().all()
    for name in ("population", "gdp", "carbon"):
        with rasterio.open(out / "predictions" / f"{name}_pred.tif") as ds:
            assert int(ds.read(1, masked=True).count()) == 576
    table = (out / "evaluation" / "evaluation.md").read_text()
    for row in ("UrbanCLIP (model)", "PCA", "Autoencoder", "ResNet-18", "Tile2Vec", "PG-SimCLR",
                "UrbanViT", "Text only", "UrbanCLIP w/o L_LM", "UrbanCLIP w/o L_Con",
                "UrbanCLIP w/o refinement"):
        assert f"| {row}" in table, row
    for name in ("evaluation.csv", "evaluation_r2.png"):
        assert (out / "evaluation" / name).stat().st_size > 0
    again = CliRunner().invoke(cli, ["--progress", "none", "demo", "-o", str(out)])
    assert again.exit_code != 0 and "already exists" in str(again.exception)
