"""Cells files in, styled layers out: the QGIS side of urbangeo's GeoPackages and rasters."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsVectorLayer,
)


def source_file(layer: QgsMapLayer | None, what: str) -> Path:
    """The file behind a layer (``path.gpkg|layername=cells`` -> ``path.gpkg``)."""
    if layer is None:
        raise QgsProcessingException(f"{what}: no layer given.")
    path = Path(layer.source().split("|")[0])
    if not path.is_file():
        raise QgsProcessingException(
            f"{what}: layer {layer.name()!r} is not a file on disk ({layer.source()}); save "
            "it to a file first.")
    return path


def cells_file(layer: QgsMapLayer | None) -> Path:
    """The GeoPackage behind a cells layer, refusing anything urbangeo did not write."""
    path = source_file(layer, "Cells")
    if path.suffix.lower() != ".gpkg":
        raise QgsProcessingException(
            f"Cells: {path.name} is not a GeoPackage; use the cells.gpkg written by "
            "\"Create grid\" (urbangeo grid).")
    return path


def vector_uri(path: Path, layer_name: str) -> str:
    return f"{path}|layername={layer_name}"


def load_on_completion(context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                       path: Path, layer_name: str | None = None,
                       along_with: Path | None = None) -> None:
    """Hand QGIS a layer opened with its default style (the GeoPackage's ``layer_styles`` row
    or the raster's ``.qml``) to add to the project when the algorithm ends.

    Only when the user ticked "Open output file" for ``path`` (or, for side outputs such as
    predicted rasters, for the output ``along_with``). Processing itself opens outputs without
    their default style, and a GeoPackage opened without a layer name may show its metadata
    table: the entry Processing registered is swapped for our styled layer.
    """
    pending = context.layersToLoadOnCompletion()
    if along_with is None:
        details = pending.pop(str(path), None)
    else:
        main = pending.get(str(along_with))
        details = None if main is None else QgsProcessingContext.LayerDetails(
            path.stem, main.project, main.outputName)
    if details is None:
        return
    if layer_name is None:
        layer = QgsRasterLayer(str(path), path.stem)
    else:
        layer = QgsVectorLayer(vector_uri(path, layer_name), layer_name, "ogr")
    if not layer.isValid():
        feedback.reportError(f"Could not open {path} in QGIS.")
        return
    layer.loadDefaultStyle()
    context.temporaryLayerStore().addMapLayer(layer)
    pending[layer.id()] = details
    context.setLayersToLoadOnCompletion(pending)

