"""Train model: ``urbangeo train`` (UrbanCLIP contrastive image-text pretraining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
)

from ..layers import cells_file
from .base import DEVICES, Invocation, UrbangeoAlgorithm

PRESETS = ("tiny", "small", "base")
CAPTION_COLUMNS = ("caption", "caption_raw")


class TrainAlgorithm(UrbangeoAlgorithm):
    algorithm_id, title, command = "trainmodel", "Train model", "train"
    usage = ("urbangeo --progress json train CELLS.gpkg -o MODEL_DIR [--preset tiny|small|base] "
             "[--epochs N] [--batch-size N] [--lr F] [--caption-column caption|caption_raw] "
             "[--seed N] [--device auto|cpu|cuda] --overwrite")
    summary = ("Trains an UrbanCLIP model on the captioned cells' chips and captions and saves "
               "it as a model folder (config.json, model.safetensors, tokenizer, training "
               "log). Unset options use urbangeo's defaults; tiny trains in minutes on a CPU, "
               "larger presets want a GPU (device auto picks CUDA when present). Cancelling "
               "keeps the run's checkpoints (MODEL_DIR.partial): running it again with the "
               "same settings resumes where it stopped.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterVectorLayer(
            "CELLS", "Captioned cells (GeoPackage)", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterEnum(
            "PRESET", "Model size", options=list(PRESETS), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", "Epochs", QgsProcessingParameterNumber.Integer, optional=True,
            minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "BATCH_SIZE", "Batch size (contrastive negatives)",
            QgsProcessingParameterNumber.Integer, optional=True, minValue=2))
        self.addParameter(QgsProcessingParameterNumber(
            "LR", "Learning rate", QgsProcessingParameterNumber.Double, optional=True,
            minValue=1e-12))
        self.addParameter(QgsProcessingParameterEnum(
            "CAPTION_COLUMN", "Text to learn from (refined or raw captions)",
            options=list(CAPTION_COLUMNS), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "SEED", "Seed", QgsProcessingParameterNumber.Integer, optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            "DEVICE", "Device", options=list(DEVICES), optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))

    def invocation(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> Invocation:
        cells = cells_file(self.parameterAsVectorLayer(parameters, "CELLS", context))
        model = Path(self.parameterAsFileOutput(parameters, "OUTPUT", context))
        args = [str(cells), "-o", str(model)]
        args += self.enum_option(parameters, "PRESET", "--preset", PRESETS, context)
        args += self.number_option(parameters, "EPOCHS", "--epochs", context)
        args += self.number_option(parameters, "BATCH_SIZE", "--batch-size", context)
        args += self.number_option(parameters, "LR", "--lr", context, integer=False)
        args += self.enum_option(parameters, "CAPTION_COLUMN", "--caption-column",
                                 CAPTION_COLUMNS, context)
        args += self.number_option(parameters, "SEED", "--seed", context)
        args += self.enum_option(parameters, "DEVICE", "--device", DEVICES, context)
        # MODEL_DIR.partial/ (checkpoints) is not an output: a cancelled run keeps it, and
        # running the algorithm again with the same settings resumes from it.
        return Invocation([*args, "--overwrite"], [model], {"OUTPUT": str(model)})
