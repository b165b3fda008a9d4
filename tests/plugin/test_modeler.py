"""The algorithms chain in the Graphical Modeler: Create grid's output feeds Caption cells."""

from __future__ import annotations

from pathlib import Path

import processing
from qgis.core import (
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsVectorLayer,
)


def test_grid_then_caption_model(provider, city: Path, tmp_path: Path) -> None:
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    model = QgsProcessingModelAlgorithm("grid and caption", "urbangeo")
    grid = QgsProcessingModelChildAlgorithm("urbanclip:creategrid")
    grid.setChildId("grid")
    for name, value in {"AOI": str(city / "aoi.geojson"), "CELL_SIZE": 500,
                        "IMAGERY": str(city / "imagery.tif"), "TILE_PX": 32}.items():
        grid.addParameterSources(name, [static(value)])
    cells_output = QgsProcessingModelOutput("cells", "Cells")
    cells_output.setChildId("grid")
    cells_output.setChildOutputName("OUTPUT")
    grid.setModelOutputs({"cells": cells_output})
    caption = QgsProcessingModelChildAlgorithm("urbanclip:captioncells")
    caption.setChildId("caption")
    caption.addParameterSources(
        "CELLS", [QgsProcessingModelChildParameterSource.fromChildOutput("grid", "OUTPUT")])
    caption.addParameterSources("BACKEND", [static(0)])
    model.addChildAlgorithm(grid)
    model.addChildAlgorithm(caption)
    model.updateDestinationParameters()

    output = tmp_path / "cells.gpkg"
    processing.run(model, {"grid:cells": str(output)})
    cells = QgsVectorLayer(f"{output}|layername=cells", "cells", "ogr")
    assert cells.isValid() and cells.featureCount() == 16
    assert all(feature["caption"] for feature in cells.getFeatures())
