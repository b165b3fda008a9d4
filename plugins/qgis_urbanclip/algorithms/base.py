"""What every urbangeo algorithm shares: argument building, running the CLI, loading results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
)

from ..runner import run_urbangeo

HELP_URL = "https://github.com/urbangeo/urbangeo/blob/main/docs/qgis.md"
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Invocation:
    """One CLI run: its arguments, the outputs it may create (removed if cancelled), and the
    algorithm's results."""

    args: list[str]
    outputs: list[Path] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


class UrbangeoAlgorithm(QgsProcessingAlgorithm):
    """A Processing algorithm that runs one ``urbangeo`` command in a subprocess.

    Subclasses set the names, declare parameters in ``initAlgorithm``, translate parameters
    into an :class:`Invocation` in ``invocation`` and may load layers in ``load_results``
    (called on the main thread, where layers must be created).
    """

    algorithm_id = ""
    title = ""
    command = ""
    usage = ""  # the command line it runs, shown in the help panel and docs/qgis.md
    summary = ""
    group_name, group_id = "Pipeline", "pipeline"

    def name(self) -> str:
        return self.algorithm_id

    def displayName(self) -> str:
        return self.title

    def group(self) -> str:
        return self.group_name

    def groupId(self) -> str:
        return self.group_id

    def shortHelpString(self) -> str:
        return f"{self.summary}\n\nRuns: {self.usage}" if self.usage else self.summary

    def helpUrl(self) -> str:
        return HELP_URL

    def createInstance(self) -> UrbangeoAlgorithm:
        return type(self)()

    def invocation(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> Invocation:
        raise NotImplementedError

    def load_results(self, context: QgsProcessingContext,
                     feedback: QgsProcessingFeedback) -> None:
        """Default: nothing to load."""

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        run = self.invocation(parameters, context, feedback)
        run_urbangeo([self.command, *run.args], feedback, run.outputs)
        return run.results

    def postProcessAlgorithm(self, context: QgsProcessingContext,
                             feedback: QgsProcessingFeedback) -> dict[str, Any]:
        self.load_results(context, feedback)
        return {}

    # -- parameter helpers: an unset optional parameter passes no option, so the CLI's own
    #    default applies (one source of truth for defaults).
    @staticmethod
    def is_set(parameters: dict[str, Any], name: str) -> bool:
        return parameters.get(name) not in (None, "")

    def number_option(self, parameters: dict[str, Any], name: str, option: str,
                      context: QgsProcessingContext, integer: bool = True) -> list[str]:
        if not self.is_set(parameters, name):
            return []
        value = (self.parameterAsInt(parameters, name, context) if integer
                 else self.parameterAsDouble(parameters, name, context))
        return [option, repr(value) if not integer else str(value)]

    def text_option(self, parameters: dict[str, Any], name: str, option: str,
                    context: QgsProcessingContext) -> list[str]:
        value = self.parameterAsString(parameters, name, context).strip()
        return [option, value] if value else []

    def enum_option(self, parameters: dict[str, Any], name: str, option: str,
                    choices: tuple[str, ...], context: QgsProcessingContext) -> list[str]:
        if not self.is_set(parameters, name):
            return []
        return [option, choices[self.parameterAsEnum(parameters, name, context)]]

    @staticmethod
    def gpkg_destination(path: str, what: str) -> Path:
        """A vector destination, which urbangeo always writes as a GeoPackage."""
        if Path(path).suffix.lower() != ".gpkg":
            raise QgsProcessingException(
                f"{what}: urbangeo writes GeoPackages; choose a file name ending in .gpkg "
                f"(got {path}).")
        return Path(path)
