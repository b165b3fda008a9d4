"""``similar`` on two copies of the fixture city: a cell's identical copy comes first with
cosine 1, the GeoPackage is in EPSG:4326, unknown ids are refused with close ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from urbangeo.errors import InputError
from urbangeo.learn.data import load_cell_data
from urbangeo.learn.similar import LAYER, find_cell, similar


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny UrbanCLIP: similarity needs an encoder, not a good one."""
    import torch

    from urbangeo.model import UrbanCLIP, UrbanCLIPConfig, save_model

    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("model") / "tiny",
                      UrbanCLIP(UrbanCLIPConfig.from_preset("tiny")))


@pytest.fixture
def two_copies(city_cells: Path) -> list[Path]:
    """The fixture city and an identical copy of it in another folder (another "city")."""
    copy_dir = city_cells.parent / "twin"
    copy_dir.mkdir()
    for item in city_cells.parent.glob("cells*"):
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, copy_dir / item.name)
    return [city_cells, copy_dir / "cells.gpkg"]


def test_identical_copy_is_the_nearest_and_written_in_wgs84(two_copies: list[Path],
                                                            model_dir: Path,
                                                            tmp_path: Path) -> None:
    datas = [load_cell_data(p) for p in two_copies]
    query = datas[0].cell_ids[10]
    out = tmp_path / "similar.gpkg"
    report = similar(datas, model_dir, query, k=5, output=out)

    assert report.query.cell_id == query and report.query.file_index == 0
    first = report.matches[0]
    assert (first.cell_id, first.file, first.file_index) == (query, "twin", 1)
    assert first.cosine == pytest.approx(1.0, abs=1e-5)
    assert [m.rank for m in report.matches] == [1, 2, 3, 4, 5]
    assert all((m.file_index, m.cell_id) != (0, query) for m in report.matches)  # not itself
    cosines = [m.cosine for m in report.matches]
    assert cosines == sorted(cosines, reverse=True)
    assert report.query.caption == datas[0].caption_texts()[10]
    assert report.query.indicators["population"] == datas[0].target("population")[10]
    assert (two_copies[0].parent / "cells.embeddings").is_dir()  # cached for the next ask

    frame = gpd.read_file(out, layer=LAYER)
    assert frame.crs.to_epsg() == 4326
    assert list(frame["rank"]) == [0, 1, 2, 3, 4, 5]
    assert list(frame["cell_id"][:2]) == [query, query]
    assert np.allclose(frame["cosine"][1:], cosines)
    assert {"file", "caption", "population", "gdp", "carbon"} <= set(frame.columns)
    cells = datas[0].cells_file.cells
    expected = cells.geometry.iloc[int(datas[0].index[10])]
    expected = gpd.GeoSeries([expected], crs=cells.crs).to_crs(4326).iloc[0]
    assert frame.geometry.iloc[0].equals_exact(expected, tolerance=1e-9)
    assert "twin" in "\n".join(report.lines())


def test_other_files_only_searches_the_other_city(two_copies: list[Path],
                                                  model_dir: Path) -> None:
    datas = [load_cell_data(p) for p in two_copies]
    query = datas[0].cell_ids[3]
    report = similar(datas, model_dir, query, k=len(datas[1]) + 5, other_files_only=True)
    assert {m.file_index for m in report.matches} == {1}
    assert len(report.matches) == len(datas[1])  # k larger than what there is
    assert report.matches[0].cell_id == query


def test_unknown_cell_is_refused_with_close_ids(city_cells: Path, model_dir: Path) -> None:
    data = load_cell_data(city_cells)
    real = data.cell_ids[5]
    typo = real[:-1] + ("9" if real[-1] != "9" else "8")
    with pytest.raises(InputError, match=f"no cell '{typo}'.*close ids: .*{real[:-1]}"):
        find_cell([data], typo)
    with pytest.raises(InputError, match="k must be at least 1"):
        similar([data], model_dir, real, k=0)
    with pytest.raises(InputError, match="needs a second cells file"):
        similar([data], model_dir, real, other_files_only=True)
