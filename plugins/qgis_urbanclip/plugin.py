"""The plugin object: registers the Processing provider (also headless, for qgis_process)."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import UrbanClipProvider


class UrbanClipPlugin:
    """Registers the "UrbanCLIP" Processing provider; the algorithms are the whole UI."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: UrbanClipProvider | None = None

    def initProcessing(self) -> None:
        """Called by QGIS (also by qgis_process, which has no GUI) to add the provider."""
        if self.provider is None:
            self.provider = UrbanClipProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
