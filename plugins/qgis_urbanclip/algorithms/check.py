"""Check installation: the versions users paste into bug reports."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
)

from ..diagnostics import report_lines
from .base import UrbangeoAlgorithm


class CheckInstallationAlgorithm(UrbangeoAlgorithm):
    algorithm_id, title = "checkinstallation", "Check installation"
    group_name, group_id = "Diagnostics", "diagnostics"
    summary = ("Reports the QGIS, Python, urbangeo, torch and CUDA versions and which urbangeo "
               "command the plugin runs. Paste the report into bug reports. When urbangeo is "
               "missing it says how to install it.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addOutput(QgsProcessingOutputString("REPORT", "Report"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        lines = report_lines()
        for line in lines:
            if "NOT FOUND" in line or "failed" in line:
                feedback.reportError(line)
            else:
                feedback.pushInfo(line)
        return {"REPORT": "\n".join(lines)}
