"""QGIS styles (QML) so every file urbangeo writes opens readable in QGIS 3.22+.

Cells GeoPackages store the QML in ``layer_styles`` (QGIS's default-style table); rasters get a
same-named ``.qml`` sidecar, which QGIS loads as the layer's default style.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np
import pandas as pd

from urbangeo.errors import DataError, InputError

QGIS_VERSION = "3.22.0-Białowieża"
#: Colour ramps as evenly spaced RGB stops (matplotlib viridis, ColorBrewer YlOrRd).
RAMPS: dict[str, tuple[str, ...]] = {
    "viridis": ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
                "#addc30", "#fde725"),
    "YlOrRd": ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c",
               "#bd0026", "#800026"),
}
FILL_ALPHA = 180  # of 255: cells stay see-through over a basemap
OUTLINE = "35,35,35,255"


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def ramp_colors(ramp: str, n: int) -> list[tuple[int, int, int]]:
    """``n`` colours evenly sampled (linear interpolation) along a named ramp."""
    if ramp not in RAMPS:
        raise InputError(f"unknown colour ramp '{ramp}': choose one of {', '.join(RAMPS)}")
    stops = np.array([_rgb(c) for c in RAMPS[ramp]], dtype=float)
    at = np.linspace(0, len(stops) - 1, max(n, 1))
    channels = [np.interp(at, np.arange(len(stops)), stops[:, i]) for i in range(3)]
    return [tuple(int(round(v)) for v in rgb) for rgb in zip(*channels, strict=True)]


def _document(**attrs: str) -> ET.Element:
    return ET.Element("qgis", {"version": QGIS_VERSION, "styleCategories": "Symbology", **attrs})


def _serialize(root: ET.Element) -> str:
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def _options(parent: ET.Element, props: dict[str, str]) -> None:
    """Symbol-layer properties in both the 3.22+ ``Option`` map and the older ``prop`` form."""
    option_map = ET.SubElement(parent, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(option_map, "Option", name=key, type="QString", value=value)
    for key, value in props.items():
        ET.SubElement(parent, "prop", k=key, v=value)


def _fill_symbol(parent: ET.Element, name: str, fill: str, style: str = "solid") -> None:
    symbol = ET.SubElement(parent, "symbol", type="fill", name=name, alpha="1",
                           clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "pass": "0", "locked": "0",
                                            "enabled": "1"})
    _options(layer, {"color": fill, "style": style, "outline_color": OUTLINE,
                     "outline_style": "solid", "outline_width": "0.2",
                     "outline_width_unit": "MM", "joinstyle": "miter"})


def _color_ramp(parent: ET.Element, ramp: str) -> None:
    colors = RAMPS[ramp]
    first, last = _rgb(colors[0]), _rgb(colors[-1])
    stops = ":".join(
        f"{i / (len(colors) - 1):.4f};{','.join(map(str, _rgb(c)))},255"
        for i, c in enumerate(colors[1:-1], start=1)
    )
    element = ET.SubElement(parent, "colorramp", type="gradient", name="[source]")
    _options(element, {"color1": f"{','.join(map(str, first))},255",
                       "color2": f"{','.join(map(str, last))},255",
                       "discrete": "0", "rampType": "gradient", "stops": stops})


def outline_style() -> str:
    """Outlines only (no fill): the cells before any column is worth colouring."""
    root = _document()
    renderer = ET.SubElement(root, "renderer-v2", type="singleSymbol", symbollevels="0",
                             forceraster="0", enableorderby="0")
    symbols = ET.SubElement(renderer, "symbols")
    _fill_symbol(symbols, "0", "0,0,0,0", style="no")
    _trailer(root)
    return _serialize(root)


def quantile_breaks(values: Sequence[float] | np.ndarray, classes: int = 5) -> np.ndarray:
    """Edges splitting the finite values into ``classes`` equal-count groups (deduplicated)."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise DataError("the style column has no numeric values to classify: pick another column")
    return np.unique(np.quantile(data, np.linspace(0.0, 1.0, classes + 1)))


def graduated_style(values: Sequence[float] | np.ndarray, column: str, *, classes: int = 5,
                    ramp: str = "viridis") -> str:
    """Quantile classes of ``column`` filled along ``ramp``, semi-transparent, thin outlines."""
    breaks = quantile_breaks(values, classes)
    if len(breaks) == 1:
        breaks = np.array([breaks[0], breaks[0]])
    n = len(breaks) - 1
    colors = ramp_colors(ramp, n)
    root = _document()
    renderer = ET.SubElement(root, "renderer-v2", type="graduatedSymbol", attr=column,
                             graduatedMethod="GraduatedColor", symbollevels="0",
                             forceraster="0", enableorderby="0")
    ranges = ET.SubElement(renderer, "ranges")
    symbols_el = ET.Element("symbols")
    for i in range(n):
        lower, upper = float(breaks[i]), float(breaks[i + 1])
        ET.SubElement(ranges, "range", lower=repr(lower), upper=repr(upper), symbol=str(i),
                      label=f"{lower:.4g} - {upper:.4g}", render="true")
        _fill_symbol(symbols_el, str(i), f"{','.join(map(str, colors[i]))},{FILL_ALPHA}")
    renderer.append(symbols_el)
    source = ET.SubElement(renderer, "source-symbol")
    _fill_symbol(source, "0", f"{','.join(map(str, colors[0]))},{FILL_ALPHA}")
    _color_ramp(renderer, ramp)
    method = ET.SubElement(renderer, "classificationMethod", id="Quantile")
    ET.SubElement(method, "symmetricMode", enabled="0", symmetrypoint="0", astride="0")
    ET.SubElement(method, "labelFormat", format="%1 - %2", labelprecision="4",
                  trimtrailingzeroes="1")
    ET.SubElement(renderer, "mode", name="quantile")
    _trailer(root)
    return _serialize(root)


def cells_style(cells: pd.DataFrame, column: str | None = None, *, ramp: str = "viridis") -> str:
    """The style for a cells layer: outlines, or graduated on a numeric ``column`` if given."""
    if column is None:
        return outline_style()
    if column not in cells.columns:
        numeric = [c for c in cells.columns if c not in ("row", "col")
                   and pd.api.types.is_numeric_dtype(cells[c])]
        raise InputError(f"--style-column '{column}' is not a column of the cells (numeric "
                         f"columns: {', '.join(numeric) or 'none yet'})")
    if not pd.api.types.is_numeric_dtype(cells[column]):
        raise InputError(f"--style-column '{column}' is not numeric: pick a numeric column")
    return graduated_style(cells[column].to_numpy(dtype=float), column, ramp=ramp)


def raster_style(vmin: float, vmax: float, *, band: int = 1, ramp: str = "viridis") -> str:
    """A singleband pseudocolor style stretching ``ramp`` from ``vmin`` to ``vmax``."""
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise DataError("the raster band has no finite values to style")
    vmax = vmax if vmax > vmin else vmin + 1.0
    root = _document()
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band=str(band),
                             opacity="1", alphaBand="-1", classificationMin=repr(vmin),
                             classificationMax=repr(vmax), nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    minmax = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"),
                      ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                      ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(minmax, tag).text = text
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue=repr(vmin), maximumValue=repr(vmax), labelPrecision="4")
    _color_ramp(shader, ramp)
    colors = RAMPS[ramp]
    for value, color in zip(np.linspace(vmin, vmax, len(colors)), colors, strict=True):
        ET.SubElement(shader, "item", alpha="255", value=repr(float(value)),
                      label=f"{value:.4g}", color=color)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
                  colorizeRed="255", colorizeGreen="128", colorizeBlue="128",
                  colorizeStrength="100", invertColors="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return _serialize(root)


def _trailer(root: ET.Element) -> None:
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
