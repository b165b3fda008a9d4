"""Create grid: ``urbangeo grid`` (AOI or extent -> cells, optional chips and indicators)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterCrs,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from ..layers import load_on_completion, source_file, vector_uri
from .base import Invocation, UrbangeoAlgorithm

STATS = ("sum", "mean")


def indicator_name(layer_name: str) -> str:
    """A column name urbangeo accepts from a layer name: ASCII letters, digits and underscores,
    not starting with a digit, at most 63 characters ("Bevölkerung 2020" -> bevolkerung_2020)."""
    ascii_name = unicodedata.normalize("NFKD", layer_name).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "_", ascii_name.strip().lower()).strip("_") or "indicator"
    if name[0].isdigit():
        name = f"_{name}"
    return name[:63]


def crs_argument(crs: QgsCoordinateReferenceSystem) -> str:
    """What urbangeo (PROJ) can read: the EPSG/ESRI/IGNF code, else the WKT (a QGIS
    user-defined CRS's ``USER:100000`` means nothing outside QGIS)."""
    authid = crs.authid()
    if authid.split(":")[0] in ("EPSG", "ESRI", "IGNF"):
        return authid
    return crs.toWkt()


class GridAlgorithm(UrbangeoAlgorithm):
    algorithm_id, title, command = "creategrid", "Create grid", "grid"
    usage = ("urbangeo --progress json grid AOI [--layer NAME] | --bbox X0,Y0,X1,Y1 --bbox-crs "
             "CRS -o CELLS.gpkg --cell-size M [--crs CRS] [--indicator NAME=RASTER:sum|mean ...] "
             "[--imagery RASTER --tile-px N --bands R,G,B --nir-band N] [--style-column NAME] "
             "--overwrite")
    summary = ("Covers an area of interest (a polygon layer, or else an extent) with square "
               "cells anchored on multiples of the cell size, in the AOI's UTM zone unless a "
               "CRS is given. Optional indicator rasters add one column each (sum for counts "
               "such as population, mean for densities); optional imagery cuts one chip per "
               "cell into a chip store beside the GeoPackage (<name>.chips.zarr).")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterFeatureSource(
            "AOI", "Area of interest", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterExtent(
            "EXTENT", "Extent (when no area of interest layer is given)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "CELL_SIZE", "Cell size (metres)", QgsProcessingParameterNumber.Double,
            defaultValue=1000.0, minValue=1.0))
        self.addParameter(QgsProcessingParameterCrs(
            "CRS", "Grid CRS, projected in metres (default: the AOI's UTM zone)",
            optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "INDICATORS", "Indicator rasters (column named after each layer)",
            QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            "INDICATOR_STAT", "Indicator statistic", options=[
                "sum (counts, e.g. population)", "mean (densities)"], defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "IMAGERY", "Imagery for chips", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_PX", "Chip size (pixels)", QgsProcessingParameterNumber.Integer,
            defaultValue=256, minValue=8, maxValue=4096))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", "Imagery bands shown as red,green,blue (e.g. 3,2,1)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "NIR_BAND", "Imagery band stored as near infrared (for NDVI)",
            QgsProcessingParameterNumber.Integer, optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterString(
            "STYLE_COLUMN", "Style the cells by this numeric column", optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Cells", QgsProcessing.TypeVectorPolygon))

    def invocation(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> Invocation:
        output = self.gpkg_destination(
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), "Cells")
        args = [*self._area(parameters, context, feedback), "-o", str(output),
                "--cell-size", repr(self.parameterAsDouble(parameters, "CELL_SIZE", context))]
        crs = self.parameterAsCrs(parameters, "CRS", context)
        if self.is_set(parameters, "CRS") and crs.isValid():
            args += ["--crs", crs_argument(crs)]
        stat = STATS[self.parameterAsEnum(parameters, "INDICATOR_STAT", context)]
        for layer in self.parameterAsLayerList(parameters, "INDICATORS", context):
            raster = source_file(layer, "Indicator")
            args += ["--indicator", f"{indicator_name(layer.name())}={raster}:{stat}"]
        outputs = [output]
        imagery = self.parameterAsRasterLayer(parameters, "IMAGERY", context)
        if imagery is not None:
            args += ["--imagery", str(source_file(imagery, "Imagery")), "--tile-px",
                     str(self.parameterAsInt(parameters, "TILE_PX", context))]
            args += self.text_option(parameters, "BANDS", "--bands", context)
            args += self.number_option(parameters, "NIR_BAND", "--nir-band", context)
            outputs.append(output.with_name(f"{output.stem}.chips.zarr"))
        args += self.text_option(parameters, "STYLE_COLUMN", "--style-column", context)
        self._output = output
        return Invocation([*args, "--overwrite"], outputs,
                          {"OUTPUT": vector_uri(output, "cells")})

    def _area(self, parameters: dict[str, Any], context: QgsProcessingContext,
              feedback: QgsProcessingFeedback) -> list[str]:
        if self.is_set(parameters, "AOI"):
            path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
                parameters, "AOI", context, ["gpkg", "geojson", "shp"], "gpkg", feedback)
            args = [path]
            if layer and Path(path).suffix.lower() == ".gpkg":
                args += ["--layer", layer]
            return args
        if self.is_set(parameters, "EXTENT"):
            extent = self.parameterAsExtent(parameters, "EXTENT", context)
            crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
            if extent.isEmpty():
                raise QgsProcessingException("Extent: the extent is empty; draw or pick one.")
            bbox = ",".join(repr(v) for v in (extent.xMinimum(), extent.yMinimum(),
                                              extent.xMaximum(), extent.yMaximum()))
            # An extent typed without a CRS (qgis_process, scripts): urbangeo's default, WGS84.
            crs_args = ["--bbox-crs", crs_argument(crs)] if crs.isValid() else []
            return ["--bbox", bbox, *crs_args]
        raise QgsProcessingException(
            "Give an area: an area of interest layer or an extent.")

    def load_results(self, context: QgsProcessingContext,
                     feedback: QgsProcessingFeedback) -> None:
        load_on_completion(context, feedback, self._output, "cells")
