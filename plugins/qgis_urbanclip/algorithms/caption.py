"""Caption cells: ``urbangeo caption`` (describe each chip, refine the text), in place."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from ..layers import cells_file, vector_uri
from .base import Invocation, UrbangeoAlgorithm

BACKENDS = ("describe", "openai", "hf")


class CaptionAlgorithm(UrbangeoAlgorithm):
    algorithm_id, title, command = "captioncells", "Caption cells", "caption"
    usage = ("urbangeo --progress json caption CELLS.gpkg --backend describe|openai|hf "
             "[--model M] [--base-url URL] [--recaption]")
    summary = ("Describes each cell's chip in words and refines the text (columns caption_raw "
               "and caption), in place in the cells GeoPackage. describe: embedded, offline. "
               "openai: any OpenAI-compatible vision server (Ollama, llama.cpp, vLLM; the API "
               "key comes from the OPENAI_API_KEY environment variable). hf: a local Hugging "
               "Face model folder. Captions are cached beside the cells, so a cancelled or "
               "failed run resumes where it stopped.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterVectorLayer(
            "CELLS", "Cells (GeoPackage from Create grid, with chips)",
            [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterEnum(
            "BACKEND", "Captioning backend", options=list(BACKENDS), defaultValue=0))
        self.addParameter(QgsProcessingParameterString(
            "MODEL", "Model (openai: name on the server; hf: local folder)", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "BASE_URL", "Server base URL (openai)", optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "RECAPTION", "Ignore cached captions", defaultValue=False))
        self.addOutput(QgsProcessingOutputVectorLayer("OUTPUT", "Captioned cells"))

    def invocation(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> Invocation:
        cells = cells_file(self.parameterAsVectorLayer(parameters, "CELLS", context))
        args = [str(cells), *self.enum_option(parameters, "BACKEND", "--backend", BACKENDS,
                                              context)]
        args += self.text_option(parameters, "MODEL", "--model", context)
        args += self.text_option(parameters, "BASE_URL", "--base-url", context)
        if self.parameterAsBoolean(parameters, "RECAPTION", context):
            args.append("--recaption")
        self._cells = cells
        # The cells file is rewritten atomically, so a cancelled run leaves it as it was.
        return Invocation(args, [cells], {"OUTPUT": vector_uri(cells, "cells")})

    def load_results(self, context: QgsProcessingContext,
                     feedback: QgsProcessingFeedback) -> None:
        """Layers of the rewritten file in the project show the new columns after a reload."""
        project = context.project()
        if project is None:
            return
        for layer in project.mapLayers().values():
            if layer.source().split("|")[0] == str(self._cells):
                layer.reload()
