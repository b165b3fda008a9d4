"""``urbangeo.api`` end to end on a small synthetic city, and its parity with the CLI."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import Point

from urbangeo import api
from urbangeo.captions.registry import DEFAULT_BASE_URL
from urbangeo.cli.main import COMMANDS, LazyGroup, cli
from urbangeo.demo import EPOCHS as DEMO_EPOCHS
from urbangeo.errors import InputError, RemoteError
from urbangeo.geo.cells import read_cells
from urbangeo.geo.chips import MIN_VALID_FRAC
from urbangeo.geo.chips.store import ChipStore
from urbangeo.geo.grid import build_grid
from urbangeo.geo.indicators import IndicatorSpec
from urbangeo.sample import SampleCity, make_synthetic_city

sys.path.insert(0, str(Path(__file__).resolve().parent / "captions"))  # shared test helpers
from chat_double import ChatDouble, serve  # noqa: E402
from test_cache_and_run import COVERS, make_cells  # noqa: E402


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> SampleCity:
    return make_synthetic_city(tmp_path_factory.mktemp("city"), seed=1, size_km=3)


@pytest.fixture(scope="module")
def gridded(city: SampleCity, tmp_path_factory: pytest.TempPathFactory) -> api.GridResult:
    """The city gridded with indicators and chips in one call, as `urbangeo grid` does."""
    return api.grid(city.aoi, output=tmp_path_factory.mktemp("grid") / "cells.gpkg",
                    indicators=city.indicator_specs, imagery=city.imagery, nir_band=4,
                    style_column="population")


def test_grid_with_indicators_and_imagery_writes_everything(gridded: api.GridResult) -> None:
    cf = read_cells(gridded.path)
    n = len(cf.cells)
    assert n == gridded.cells.metadata["grid"]["n_cells"] == 9  # 3 km city, 1 km cells
    assert cf.cells["has_chip"].all() and gridded.chips.cut == n
    assert [r.name for r in gridded.indicators.results] == ["population", "gdp", "carbon"]
    assert cf.cells["population"].sum() == pytest.approx(
        cf.metadata["indicators"]["population"]["raster_total_in_cells"], rel=1e-6)
    assert cf.metadata["chips"]["band_names"][3] == "nir"
    assert 'attr="population"' in cf.style_qml
    lines = gridded.lines()
    assert lines[0].startswith(f"{n} cells (1000 m") and lines[-1] == f"-> {gridded.path}"
    assert any(line.startswith("population (sum): 9/9 cells with values") for line in lines)


def test_chips_rerun_fills_only_missing(city: SampleCity, tmp_path: Path) -> None:
    store = tmp_path / "shared.chips.zarr"
    aoi = gpd.read_file(city.aoi).to_crs(4326)
    minx, miny, maxx, maxy = aoi.total_bounds
    west = api.grid(bbox=(minx, miny, (minx + maxx) / 2, maxy), output=tmp_path / "west.gpkg",
                    imagery=[city.imagery], nir_band=4, store=store)
    full = api.grid(city.aoi, output=tmp_path / "full.gpkg")
    assert full.chips is None and "has_chip" not in read_cells(full.path).cells
    result = api.chips(full.path, city.imagery, nir_band=4, store=store)
    n_west, n_full = len(west.cells.cells), len(full.cells.cells)
    assert 0 < n_west < n_full
    assert result.report.skipped_existing == n_west and result.report.cut == n_full - n_west
    assert read_cells(full.path).cells["has_chip"].all()
    again = api.chips(full.path, city.imagery, nir_band=4, store=store)
    assert again.report.cut == 0 and again.report.skipped_existing == n_full
    with pytest.raises(InputError, match="at least one --imagery"):
        api.chips(full.path, [])


def test_indicators_from_strings_and_specs(city: SampleCity, tmp_path: Path) -> None:
    path = api.grid(city.aoi, output=tmp_path / "cells.gpkg").path
    result = api.indicators(path, [f"people={city.population}:sum",
                                   IndicatorSpec("co2", city.carbon, "mean")])
    cells = read_cells(path).cells
    assert cells["people"].notna().all() and cells["co2"].notna().all()
    assert cells["people"].sum() == pytest.approx(result.report.results[0].cells_value)
    assert result.lines()[1].startswith("co2 (mean): 9/9 cells with values, area-weighted mean")
    with pytest.raises(InputError, match="at least one --indicator"):
        api.indicators(path, [])
    with pytest.raises(InputError, match="does not exist"):
        api.indicators(path, "pop=/no/such.tif")


def test_caption_describe_resumes_and_takes_vector_context(gridded: api.GridResult,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "cells.gpkg"
    path.write_bytes(gridded.path.read_bytes())  # the chip store is found beside the original
    store = gridded.path.parent / gridded.cells.metadata["chips"]["store"]
    (tmp_path / store.name).symlink_to(store)
    first = api.caption(path)
    cells = read_cells(path).cells
    assert first.report.n_captioned == len(cells) and cells["caption"].notna().all()
    assert set(cells["caption_backend"]) == {"describe"}
    first.raise_for_failures()  # nothing failed: no error
    again = api.caption(path)
    assert again.report.n_captioned == 0 and again.report.n_cached == len(cells)

    centre = cells.geometry.iloc[0].centroid
    pois = tmp_path / "pois.gpkg"
    gpd.GeoDataFrame({"amenity": ["cafe", "cafe"]},
                     geometry=[Point(centre.x, centre.y), Point(centre.x + 10, centre.y)],
                     crs=cells.crs).to_file(pois)
    with_pois = api.caption(path, vector_context=[f"{pois}:amenity"])
    assert with_pois.report.n_captioned == len(cells)  # new context, new captions
    assert "2 cafes" in read_cells(path).cells["caption_raw"].iloc[0]
    as_pair = api.caption(path, vector_context=[(pois, "amenity")])
    assert as_pair.report.n_cached == len(cells)  # the same layer given as a pair: same key
    with pytest.raises(InputError, match="describe backend only"):
        api.caption(path, "openai", model="m", vector_context=[pois])


def test_caption_failures_are_reported_then_raised(tmp_path: Path, monkeypatch) -> None:
    path = make_cells(tmp_path)
    failing = np.array(COVERS["r0c2"])
    double = ChatDouble(model="vlm", fail_if=lambda img: bool((img[0, 0] == failing).all()))
    with serve(double):
        result = api.caption(path, "openai", model="vlm", base_url=double.url, max_retries=0)
    assert set(result.report.failures) == {"r0c2"} and result.report.n_captioned == 4
    assert read_cells(path).cells["caption_raw"].notna().sum() == 4  # the others are saved
    with pytest.raises(RemoteError, match="1 cells failed"):
        result.raise_for_failures()


def test_rasterize_writes_cog_and_refuses_overwrite(gridded: api.GridResult,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "pop.tif"
    result = api.rasterize(gridded.path, "population", out)
    assert result.path == out and (tmp_path / "pop.qml").exists()
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("population",)
        assert np.nansum(ds.read(1)) == pytest.approx(gridded.cells.cells["population"].sum(),
                                                      rel=1e-5)
    with pytest.raises(InputError, match="--overwrite"):
        api.rasterize(gridded.path, ["gdp"], out)
    api.rasterize(gridded.path, ["gdp"], out, overwrite=True)
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("gdp",)


def test_grid_mistakes(city: SampleCity, tmp_path: Path) -> None:
    out = tmp_path / "cells.gpkg"
    with pytest.raises(InputError, match="not both"):
        api.grid(city.aoi, bbox="0,0,1,1", output=out)
    with pytest.raises(InputError, match="--bbox"):
        api.grid(output=out)
    with pytest.raises(InputError, match="--zoom"):
        api.grid(city.aoi, scheme="xyz", zoom=15, cell_size=1000, output=out)
    api.grid(city.aoi, output=out)
    with pytest.raises(InputError, match="--overwrite"):
        api.grid(city.aoi, output=out, cell_size=500)
    assert api.grid(city.aoi, output=out, cell_size=500, overwrite=True).cells.metadata[
        "grid"]["cell_size_m"] == 500


def test_cli_and_api_write_identical_cells_files(city: SampleCity, tmp_path: Path) -> None:
    options = ["--indicator", f"pop={city.population}:sum", "--imagery", str(city.imagery),
               "--bands", "1,2,3", "--nir-band", "4", "--style-column", "pop",
               "--tile-px", "64", "--cell-size", "750"]
    result = CliRunner().invoke(cli, ["--progress", "none", "grid", str(city.aoi),
                                      "-o", str(tmp_path / "cli.gpkg"), *options])
    assert result.exit_code == 0, result.output
    made = api.grid(city.aoi, output=tmp_path / "api.gpkg", indicators=[f"pop={city.population}"],
                    imagery=city.imagery, bands=[1, 2, 3], nir_band=4, style_column="pop",
                    tile_px=64, cell_size=750)
    assert result.output.splitlines()[:-2] == made.lines()[:-2]  # all but chip timing and path
    by_cli, by_api = read_cells(tmp_path / "cli.gpkg"), read_cells(made.path)
    pd.testing.assert_frame_equal(by_cli.cells, by_api.cells)
    assert by_cli.style_qml == by_api.style_qml
    assert by_cli.metadata["chips"].pop("store") == "cli.chips.zarr"
    assert by_api.metadata["chips"].pop("store") == "api.chips.zarr"
    assert by_cli.metadata == by_api.metadata
    ids = by_api.cells.loc[by_api.cells["has_chip"], "cell_id"].tolist()
    assert ids
    cli_store = ChipStore.open(tmp_path / "cli.chips.zarr")
    api_store = ChipStore.open(tmp_path / "api.chips.zarr")
    assert np.array_equal(cli_store.read_many(ids), api_store.read_many(ids))


# Defaults the API leaves to the library (None) and the value the CLI shows for them.
LIBRARY_DEFAULTS = {("grid", "cell_size"): inspect.signature(build_grid).parameters[
    "cell_size"].default, ("grid", "min_valid_frac"): MIN_VALID_FRAC,
    ("chips", "min_valid_frac"): MIN_VALID_FRAC, ("caption", "base_url"): DEFAULT_BASE_URL,
    ("demo", "epochs"): DEMO_EPOCHS}


# The least each command needs on its command line; the API requires these too.
REQUIRED_ARGS = {"grid": ["-o", "x.gpkg"], "chips": ["c.gpkg"], "indicators": ["c.gpkg"],
                 "rasterize": ["c.gpkg", "col", "-o", "x.tif"], "caption": ["c.gpkg"],
                 "demo": [], "train": ["c.gpkg", "-o", "m"],
                 "predict": ["c.gpkg", "--model", "m", "--target", "t", "-o", "p.gpkg"],
                 "evaluate": ["c.gpkg", "-o", "d"],
                 "similar": ["c.gpkg", "--model", "m", "--cell", "x"]}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_cli_option_is_an_api_parameter_with_the_same_default(name: str,
                                                                   monkeypatch) -> None:
    monkeypatch.delenv("URBANGEO_TILE_CACHE", raising=False)
    command = LazyGroup().get_command(None, name)  # type: ignore[arg-type]
    parsed = command.make_context(name, list(REQUIRED_ARGS[name])).params  # defaults, processed
    signature = inspect.signature(getattr(api, name))
    params = {n: p for n, p in signature.parameters.items() if n not in ("progress", "say")}
    assert set(parsed) == set(params)
    for option, cli_default in parsed.items():
        api_default = params[option].default
        if api_default is inspect.Parameter.empty:  # the API requires it
            continue
        if cli_default == () and api_default is None:  # a repeatable option left out: "all"
            continue
        if (name, option) in LIBRARY_DEFAULTS:
            assert api_default is None and cli_default == LIBRARY_DEFAULTS[name, option]
        else:
            assert api_default == cli_default, option


@pytest.mark.slow  # shares the session's demo run; still runs by default
def test_demo_captions_the_cells(demo_run) -> None:
    run, lines = demo_run
    cf = read_cells(run.out_dir / "cells.gpkg")
    assert cf.cells["caption"].notna().all() and cf.metadata["captions"]["backend"] == "describe"
    assert lines == run.lines and any(line.strip().startswith("caption:") for line in lines)
    start = lines.index("captions of the most and the least populated cells:")
    top = cf.cells.sort_values("population").iloc[-1]
    assert lines[start + 1].strip().startswith(top["cell_id"])
    assert top["caption"].split()[0] in lines[start + 2]
    assert any(line.strip().startswith("evaluate:") for line in lines)
    with pytest.raises(InputError, match="already exists"):
        api.demo(run.out_dir)
