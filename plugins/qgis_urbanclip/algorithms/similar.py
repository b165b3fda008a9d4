"""Similar cells: ``urbangeo similar`` (nearest cells in the model's image embedding space)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from ..layers import cells_file, load_on_completion, vector_uri
from .base import DEVICES, Invocation, UrbangeoAlgorithm


class SimilarAlgorithm(UrbangeoAlgorithm):
    algorithm_id, title, command = "similarcells", "Similar cells", "similar"
    usage = ("urbangeo --progress json similar CELLS.gpkg [MORE_CELLS.gpkg ...] --model "
             "MODEL_DIR --cell CELL_ID -k N [--other-files-only] [--device auto|cpu|cuda] "
             "-o SIMILAR.gpkg --overwrite")
    summary = ("Finds the cells whose imagery looks most like one cell (by cell_id) in the "
               "trained model's image embedding space (cosine similarity), in these cells and "
               "optionally in other cities' cells files. Writes layer 'similar' (EPSG:4326): "
               "the query as rank 0 and its k matches, with caption and indicator columns.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterVectorLayer(
            "CELLS", "Cells with chips (GeoPackage)", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "MORE_CELLS", "More cells files to search", QgsProcessing.TypeVectorPolygon,
            optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model folder (from Train model)",
            behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString("CELL_ID", "Query cell_id"))
        self.addParameter(QgsProcessingParameterNumber(
            "K", "Number of similar cells", QgsProcessingParameterNumber.Integer,
            defaultValue=10, minValue=1))
        self.addParameter(QgsProcessingParameterBoolean(
            "OTHER_FILES_ONLY", "Search only the other cells files (cross-city)",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterEnum(
            "DEVICE", "Device", options=list(DEVICES), optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Similar cells", QgsProcessing.TypeVectorPolygon))

    def invocation(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> Invocation:
        cells = [cells_file(self.parameterAsVectorLayer(parameters, "CELLS", context))]
        cells += [cells_file(layer) for layer in
                  self.parameterAsLayerList(parameters, "MORE_CELLS", context)]
        output = self.gpkg_destination(
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), "Similar cells")
        args = [*map(str, cells), "--model", self.parameterAsFile(parameters, "MODEL", context),
                "--cell", self.parameterAsString(parameters, "CELL_ID", context).strip(),
                "-k", str(self.parameterAsInt(parameters, "K", context)), "-o", str(output)]
        if self.parameterAsBoolean(parameters, "OTHER_FILES_ONLY", context):
            args.append("--other-files-only")
        args += self.enum_option(parameters, "DEVICE", "--device", DEVICES, context)
        self._output = output
        return Invocation([*args, "--overwrite"], [output],
                          {"OUTPUT": vector_uri(output, "similar")})

    def load_results(self, context: QgsProcessingContext,
                     feedback: QgsProcessingFeedback) -> None:
        load_on_completion(context, feedback, self._output, "similar")
