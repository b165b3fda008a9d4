"""Create grid and Caption cells through processing.run in real QGIS, on real files."""

from __future__ import annotations

from pathlib import Path

import processing
import pytest
from qgis.core import QgsProcessingException, QgsProject, QgsVectorLayer

from .conftest import RecordingFeedback, run_cli


def _layer(uri: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(uri, "check", "ogr")
    assert layer.isValid(), uri
    return layer


def test_create_grid_from_aoi_with_chips_indicators_and_style(provider, city: Path,
                                                              tmp_path: Path) -> None:
    feedback = RecordingFeedback()
    output = tmp_path / "cells.gpkg"
    params = {"AOI": str(city / "aoi.geojson"), "CELL_SIZE": 250,
              "INDICATORS": [str(city / "population.tif"), str(city / "gdp.tif")],
              "IMAGERY": str(city / "imagery.tif"), "TILE_PX": 64, "NIR_BAND": 4,
              "STYLE_COLUMN": "population", "OUTPUT": str(output)}
    project = QgsProject.instance()
    results = processing.runAndLoadResults("urbanclip:creategrid", params, feedback=feedback)

    assert results["OUTPUT"] == f"{output}|layername=cells"
    cells = _layer(results["OUTPUT"])
    assert cells.featureCount() == 64
    names = cells.fields().names()
    assert {"population", "gdp", "has_chip"} <= set(names)
    assert (tmp_path / "cells.chips.zarr").is_dir()
    # progress reached QGIS: stage texts, a finished stage, the CLI's summary lines
    assert any(text.startswith("chips") for text in feedback.texts)
    assert max(feedback.progress) == 100
    assert any("64 cells" in info for info in feedback.infos)
    assert "--indicator" in feedback.commands[0] and "population=" in feedback.commands[0]
    # the result layer is in the project, styled by the GeoPackage's default style
    loaded = [layer for layer in project.mapLayers().values()
              if layer.source() == results["OUTPUT"]]
    assert len(loaded) == 1
    renderer = loaded[0].renderer()
    assert renderer.type() == "graduatedSymbol"
    assert renderer.classAttribute() == "population"
    del renderer, loaded, cells
    project.removeAllMapLayers()


def test_create_grid_from_extent(provider, tmp_path: Path) -> None:
    output = tmp_path / "bbox.gpkg"
    results = processing.run("urbanclip:creategrid", {
        "EXTENT": "13.40,13.43,52.50,52.52 [EPSG:4326]", "CELL_SIZE": 1000,
        "OUTPUT": str(output)})
    cells = _layer(results["OUTPUT"])
    assert cells.crs().authid() == "EPSG:32633"  # the extent's UTM zone
    # ~2 km x 2.2 km: a few 1 km cells, all of them touching the extent
    assert 4 <= cells.featureCount() <= 12


def test_create_grid_from_an_extent_without_crs_reads_it_as_wgs84(provider,
                                                                  tmp_path: Path) -> None:
    results = processing.run("urbanclip:creategrid", {
        "EXTENT": "13.40,13.43,52.50,52.52", "CELL_SIZE": 1000,
        "OUTPUT": str(tmp_path / "nocrs.gpkg")})
    assert _layer(results["OUTPUT"]).crs().authid() == "EPSG:32633"


def test_layer_names_become_column_names_urbangeo_accepts() -> None:
    from qgis_urbanclip.algorithms.grid import indicator_name

    assert indicator_name("Bevölkerung 2020") == "bevolkerung_2020"
    assert indicator_name("2020 pop") == "_2020_pop"
    assert indicator_name("人口") == "indicator"
    assert len(indicator_name("x" * 100)) == 63


def test_cli_error_becomes_processing_exception_with_its_line(provider, city: Path,
                                                              urbangeo_cli: Path,
                                                              tmp_path: Path) -> None:
    direct = run_cli(urbangeo_cli, "grid", str(city / "aoi.geojson"), "-o",
                     str(tmp_path / "direct.gpkg"), "--crs", "EPSG:4326")
    assert direct.returncode != 0
    expected = direct.stderr.strip().splitlines()[-1].removeprefix("error: ")
    with pytest.raises(QgsProcessingException) as caught:
        processing.run("urbanclip:creategrid", {
            "AOI": str(city / "aoi.geojson"), "CRS": "EPSG:4326",
            "OUTPUT": str(tmp_path / "via_qgis.gpkg")})
    assert str(caught.value) == expected
    assert not list(tmp_path.glob("*via_qgis*"))


def test_missing_cli_says_how_to_install(provider, tmp_path: Path) -> None:
    from qgis.core import QgsSettings
    from qgis_urbanclip.command import SETTING_KEY

    QgsSettings().setValue(SETTING_KEY, str(tmp_path / "nowhere" / "urbangeo"))
    with pytest.raises(QgsProcessingException, match="pip install urbangeo"):
        processing.run("urbanclip:creategrid", {
            "EXTENT": "13.40,13.43,52.50,52.52 [EPSG:4326]", "OUTPUT": str(tmp_path / "c.gpkg")})
    report = processing.run("urbanclip:checkinstallation", {})["REPORT"]
    assert "urbangeo command: NOT FOUND" in report and "pip install urbangeo" in report
    not_a_program = tmp_path / "urbangeo.txt"
    not_a_program.write_text("not a program")
    QgsSettings().setValue(SETTING_KEY, str(not_a_program))
    with pytest.raises(QgsProcessingException, match="cannot run the urbangeo command"):
        processing.run("urbanclip:creategrid", {
            "EXTENT": "13.40,13.43,52.50,52.52 [EPSG:4326]", "OUTPUT": str(tmp_path / "c.gpkg")})


def test_non_gpkg_destination_is_refused(provider, tmp_path: Path) -> None:
    with pytest.raises(QgsProcessingException, match=r"\.gpkg"):
        processing.run("urbanclip:creategrid", {
            "EXTENT": "13.40,13.43,52.50,52.52 [EPSG:4326]", "OUTPUT": str(tmp_path / "c.shp")})


def test_caption_cells_in_place_and_refresh_the_open_layer(provider, city: Path,
                                                           tmp_path: Path) -> None:
    grid = processing.run("urbanclip:creategrid", {
        "AOI": str(city / "aoi.geojson"), "CELL_SIZE": 500,
        "IMAGERY": str(city / "imagery.tif"), "TILE_PX": 32,
        "OUTPUT": str(tmp_path / "cells.gpkg")})
    project = QgsProject.instance()
    shown = project.addMapLayer(QgsVectorLayer(grid["OUTPUT"], "cells", "ogr"))
    assert "caption" not in shown.fields().names()

    feedback = RecordingFeedback()
    results = processing.run("urbanclip:captioncells", {
        "CELLS": grid["OUTPUT"], "RECAPTION": True}, feedback=feedback)
    assert results["OUTPUT"] == grid["OUTPUT"]
    assert "--recaption" in feedback.commands[0]
    captions = [feature["caption"] for feature in _layer(results["OUTPUT"]).getFeatures()]
    assert len(captions) == 16 and all(isinstance(c, str) and c for c in captions)
    # the layer already on the map was reloaded: it shows the new columns
    assert "caption" in shown.fields().names()
    assert all(feature["caption"] for feature in shown.getFeatures())
    del shown
    project.removeAllMapLayers()
