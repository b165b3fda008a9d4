"""The "UrbanCLIP" Processing provider and its one setting: which urbangeo command to run."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS

SETTING_NAME = "URBANGEO_CLI"  # stored by ProcessingConfig as command.SETTING_KEY


class UrbanClipProvider(QgsProcessingProvider):
    """Algorithms that each run one urbangeo command; results are GeoPackages."""

    def id(self) -> str:
        return "urbanclip"

    def name(self) -> str:
        return "UrbanCLIP"

    def longName(self) -> str:
        return "UrbanCLIP (urbangeo command line)"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).with_name("icon.svg")))

    def load(self) -> bool:
        """Adds the "urbangeo command" field to Processing > Options > Providers."""
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:  # Processing plugin absent: settings come from QgsSettings alone
            return super().load()
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(
            self.name(), SETTING_NAME,
            "urbangeo command (the urbangeo executable or a Python with urbangeo; "
            "empty: $URBANGEO_CLI, then urbangeo on PATH)", "", valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        return super().load()

    def unload(self) -> None:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig
        except ImportError:
            return
        ProcessingConfig.removeSetting(SETTING_NAME)

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        return ["gpkg"]  # urbangeo writes GeoPackages only

    def supportsNonFileBasedOutput(self) -> bool:
        return False  # a separate process cannot write into QGIS's memory layers
