"""predict_cells / api.predict: every cell in the output, NULL where there is no chip, COGs on
the grid, metadata and style for QGIS, and refusals before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared test helpers
from recording import RecordingProgress  # noqa: E402
from test_embed import save_tiny_model  # noqa: E402

from urbangeo import api  # noqa: E402
from urbangeo.errors import InputError  # noqa: E402
from urbangeo.geo.cells import read_cells, read_metadata, write_cells  # noqa: E402

NO_CHIP = [0, 9, 30]


@pytest.fixture
def cells_with_gaps(city_cells: Path) -> Path:
    """The test city with three cells whose chip is missing (as where imagery had no data)."""
    cf = read_cells(city_cells)
    cf.cells.loc[NO_CHIP, "has_chip"] = False
    write_cells(city_cells, cf)
    return city_cells


def test_predict_writes_every_cell_and_a_cog_per_target(cells_with_gaps, tmp_path) -> None:
    model = save_tiny_model(tmp_path / "model")
    out, rasters = tmp_path / "out" / "pred.gpkg", tmp_path / "rasters"
    progress = RecordingProgress()
    result = api.predict(cells_with_gaps, model, ["population", "carbon"], out,
                         raster_dir=rasters, split="blocks", seed=2, progress=progress)
    assert progress.totals == {"embed": 61, "probe": 2, "rasterize": 1}
    assert "predictions" in {name for name, _ in pyogrio.list_layers(out)}
    layer = pyogrio.read_dataframe(out, layer="predictions")
    source = read_cells(cells_with_gaps).cells
    assert len(layer) == 64 and list(layer["cell_id"]) == list(source["cell_id"])
    assert layer.crs == source.crs and layer.geometry.geom_equals(source.geometry).all()
    missing = ~layer["predicted"].to_numpy(dtype=bool)
    assert np.flatnonzero(missing).tolist() == NO_CHIP
    assert not layer["has_chip"][missing].any() and layer["split"][missing].isna().all()
    for t in ("population", "carbon"):
        pred = layer[f"{t}_pred"].to_numpy(dtype=float)
        assert np.isnan(pred[missing]).all() and (pred[~missing] >= 0).all()
        np.testing.assert_allclose(layer[t], source[t])  # observed values kept for every cell
        observed_log = np.log1p(layer[t].to_numpy(dtype=float))
        residual = observed_log - layer[f"{t}_pred_log"].to_numpy(dtype=float)
        np.testing.assert_allclose(layer[f"{t}_residual_log"], residual, atol=1e-9)
        with rasterio.open(rasters / f"{t}_pred.tif") as src:
            band = src.read(1)
            assert src.crs == source.crs and src.res == (250.0, 250.0)
            assert int(np.isfinite(band).sum()) == int(np.isfinite(pred).sum()) == 61
            np.testing.assert_allclose(np.sort(band[np.isfinite(band)]),
                                       np.sort(pred[np.isfinite(pred)]), rtol=1e-6)
        assert (rasters / f"{t}_pred.qml").exists()
    assert set(layer["split"].dropna()) == {"train", "val", "test"}
    meta = read_metadata(out)["predictions"]
    assert meta["targets"] == ["population", "carbon"] and meta["split"] == "blocks"
    assert meta["units"]["population"] == "people" and meta["counts"]["predicted"] == 61
    test_r2 = meta["test_metrics"]["population"]["r2"]
    assert test_r2 == pytest.approx(result.report.test_metrics["population"].r2)
    assert "population_pred" in read_cells(out, layer="predictions").style_qml
    lines = result.lines()
    assert lines[0].startswith("61 of 64 cells predicted") and "test R²" in lines[1]
    assert lines[-1] == f"-> {rasters / 'carbon_pred.tif'}"


def test_rerun_uses_the_cache_and_same_seed_same_predictions(city_cells, tmp_path) -> None:
    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "pred.gpkg"
    api.predict(city_cells, model, "gdp", out)
    first = pyogrio.read_dataframe(out, layer="predictions")
    with pytest.raises(InputError, match="already exists: pass --overwrite"):
        api.predict(city_cells, model, "gdp", out)
    progress = RecordingProgress()
    api.predict(city_cells, model, "gdp", out, overwrite=True, progress=progress)
    assert progress.totals["embed"] == 0  # every vector came from the cache
    again = pyogrio.read_dataframe(out, layer="predictions")
    np.testing.assert_array_equal(first["gdp_pred"], again["gdp_pred"])
    assert (city_cells.parent / "cells.embeddings").is_dir()


def test_mistakes_are_refused_before_any_work(city_cells, tmp_path) -> None:
    model = save_tiny_model(tmp_path / "model")
    with pytest.raises(InputError, match="no indicator 'income'"):
        api.predict(city_cells, model, ["income"], tmp_path / "p.gpkg")
    with pytest.raises(InputError, match="must end in .gpkg"):
        api.predict(city_cells, model, ["gdp"], tmp_path / "p.shp")
    with pytest.raises(InputError, match="at least one indicator"):
        api.predict(city_cells, model, [], tmp_path / "p.gpkg")
    with pytest.raises(InputError, match="is the cells file itself"):
        api.predict(city_cells, model, ["gdp"], city_cells, overwrite=True)
    with pytest.raises(InputError, match="unknown split 'kfold'"):
        api.predict(city_cells, model, ["gdp"], tmp_path / "p.gpkg", split="kfold")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "gdp_pred.tif").write_bytes(b"")
    with pytest.raises(InputError, match="gdp_pred.tif already exists"):
        api.predict(city_cells, model, ["gdp"], tmp_path / "p.gpkg", raster_dir=tmp_path / "r")
    assert not (tmp_path / "p.gpkg").exists() and not (city_cells.parent /
                                                       "cells.embeddings").exists()
