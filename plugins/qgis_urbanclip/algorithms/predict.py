"""Predict indicators: ``urbangeo predict`` (frozen image encoder + one probe per target)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from ..layers import cells_file, load_on_completion, vector_uri
from .base import DEVICES, Invocation, UrbangeoAlgorithm

SPLITS = ("random", "blocks")


def model_indicators(model: Path) -> list[str]:
    """The indicators a model folder was trained alongside (``extra.indicators`` of its
    config.json), read as plain JSON: the plugin never loads the model itself."""
    try:
        meta = json.loads((model / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QgsProcessingException(
            f"Model: {model} is not a model folder written by Train model (its config.json "
            f"cannot be read: {exc}).") from exc
    indicators = (meta.get("extra") or {}).get("indicators") or {}
    return list(indicators)


class PredictAlgorithm(UrbangeoAlgorithm):
    algorithm_id, title, command = "predictindicators", "Predict indicators", "predict"
    usage = ("urbangeo --progress json predict CELLS.gpkg --model MODEL_DIR --target NAME "
             "[--target NAME ...] -o PREDICTIONS.gpkg [--raster-dir DIR] "
             "[--split random|blocks] [--seed N] [--batch-size N] [--device auto|cpu|cuda] "
             "--overwrite")
    summary = ("Predicts indicators for every cell with a chip from a trained model: the image "
               "encoder embeds each chip, a small probe per target learns the indicator from "
               "the split's train cells. Writes layer 'predictions' (TARGET_pred, residuals, "
               "split), styled on the first target, and optionally one styled GeoTIFF per "
               "target. Targets default to every indicator the model was trained with.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterVectorLayer(
            "CELLS", "Cells with chips and indicators (GeoPackage)",
            [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model folder (from Train model)",
            behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString(
            "TARGETS", "Targets, comma separated (default: all the model's indicators)",
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            "SPLIT", "Train/val/test split", options=list(SPLITS), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "SEED", "Seed", QgsProcessingParameterNumber.Integer, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "BATCH_SIZE", "Batch size", QgsProcessingParameterNumber.Integer, optional=True,
            minValue=1))
        self.addParameter(QgsProcessingParameterEnum(
            "DEVICE", "Device", options=list(DEVICES), optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Predictions", QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "RASTER_DIR", "Folder for one predicted raster per target", optional=True,
            createByDefault=False))

    def invocation(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> Invocation:
        cells = cells_file(self.parameterAsVectorLayer(parameters, "CELLS", context))
        model = Path(self.parameterAsFile(parameters, "MODEL", context))
        targets = [t.strip() for t in
                   self.parameterAsString(parameters, "TARGETS", context).split(",") if t.strip()]
        targets = targets or model_indicators(model)
        if not targets:
            raise QgsProcessingException(
                "Targets: none given and the model lists no indicators; name the indicator "
                "columns to predict, e.g. population.")
        output = self.gpkg_destination(
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), "Predictions")
        args = [str(cells), "--model", str(model), "-o", str(output)]
        for target in targets:
            args += ["--target", target]
        args += self.enum_option(parameters, "SPLIT", "--split", SPLITS, context)
        args += self.number_option(parameters, "SEED", "--seed", context)
        args += self.number_option(parameters, "BATCH_SIZE", "--batch-size", context)
        args += self.enum_option(parameters, "DEVICE", "--device", DEVICES, context)
        outputs, results = [output], {"OUTPUT": vector_uri(output, "predictions")}
        self._output, self._rasters = output, []
        if self.is_set(parameters, "RASTER_DIR"):
            raster_dir = Path(self.parameterAsFileOutput(parameters, "RASTER_DIR", context))
            args += ["--raster-dir", str(raster_dir)]
            self._rasters = [raster_dir / f"{target}_pred.tif" for target in targets]
            outputs += [*self._rasters, *(r.with_suffix(".qml") for r in self._rasters)]
            results["RASTER_DIR"] = str(raster_dir)
        return Invocation([*args, "--overwrite"], outputs, results)

    def load_results(self, context: QgsProcessingContext,
                     feedback: QgsProcessingFeedback) -> None:
        for raster in self._rasters:
            load_on_completion(context, feedback, raster, along_with=self._output)
        load_on_completion(context, feedback, self._output, "predictions")
