"""Train model -> Predict indicators -> Similar cells through processing, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import processing
import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

from .conftest import RecordingFeedback

pytestmark = pytest.mark.needs_learning


def test_train_predict_similar(provider, captioned_cells: Path, cli_commands: set[str],
                               tmp_path: Path) -> None:
    if not {"train", "predict"} <= cli_commands:
        pytest.skip("this urbangeo has no train/predict commands")
    cells_uri = f"{captioned_cells}|layername=cells"
    feedback = RecordingFeedback()
    model = tmp_path / "model"
    trained = processing.run("urbanclip:trainmodel", {
        "CELLS": cells_uri, "PRESET": 0, "EPOCHS": 1, "DEVICE": 1, "SEED": 0,
        "OUTPUT": str(model)}, feedback=feedback)
    assert trained["OUTPUT"] == str(model)
    meta = json.loads((model / "config.json").read_text())
    assert set(meta["extra"]["indicators"]) == {"population", "gdp", "carbon"}
    assert any(text.startswith("epoch 1/1") for text in feedback.texts)
    assert "--preset tiny" in feedback.commands[0] and "--device cpu" in feedback.commands[0]

    project = QgsProject.instance()
    predictions = tmp_path / "predictions.gpkg"
    rasters = tmp_path / "rasters"
    result = processing.runAndLoadResults("urbanclip:predictindicators", {
        "CELLS": cells_uri, "MODEL": str(model), "TARGETS": "population, carbon",
        "DEVICE": 1, "OUTPUT": str(predictions), "RASTER_DIR": str(rasters)})
    layer = QgsVectorLayer(result["OUTPUT"], "predictions", "ogr")
    assert layer.isValid() and layer.featureCount() == 64
    values = [f["population_pred"] for f in layer.getFeatures()]
    assert all(v is not None and v >= 0 for v in values) and len(set(values)) > 1
    # loaded styled: the GeoPackage's graduated style and each raster's .qml
    loaded = {lyr.source(): lyr for lyr in project.mapLayers().values()}
    vector = loaded[result["OUTPUT"]]
    assert vector.renderer().type() == "graduatedSymbol"
    assert vector.renderer().classAttribute() == "population_pred"
    for target in ("population", "carbon"):
        raster = loaded[str(rasters / f"{target}_pred.tif")]
        assert isinstance(raster, QgsRasterLayer)
        assert raster.renderer().type() == "singlebandpseudocolor"
    del vector, raster, loaded, layer
    project.removeAllMapLayers()

    if "similar" not in cli_commands:
        pytest.skip("this urbangeo has no similar command (train and predict passed)")
    query = next(QgsVectorLayer(cells_uri, "c", "ogr").getFeatures())["cell_id"]
    similar = processing.run("urbanclip:similarcells", {
        "CELLS": cells_uri, "MODEL": str(model), "CELL_ID": query, "K": 5, "DEVICE": 1,
        "OUTPUT": str(tmp_path / "similar.gpkg")})
    found = QgsVectorLayer(similar["OUTPUT"], "similar", "ogr")
    assert found.isValid()
    ranked = sorted((f["rank"], f["cell_id"]) for f in found.getFeatures())
    assert [rank for rank, _ in ranked] == list(range(6))  # the query (rank 0) and 5 matches
    assert ranked[0][1] == query
