#!/usr/bin/env python3
"""Render one GeoPackage layer with its default (saved) style to a PNG, headless, by QGIS itself.

Run it with the Python that has QGIS (``/usr/bin/python3`` on Debian/Ubuntu, or the
``.venv-qgis`` that scripts/qgis-tests makes), not urbangeo's venv:

    /usr/bin/python3 scripts/render_map.py predictions.gpkg predictions docs/prediction_map.png

Plain background, no basemap (nothing is downloaded), no legend: the picture shows the
layer exactly as QGIS draws it from the style urbangeo stored in the GeoPackage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PROJ_DATA", "/usr/share/proj")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def render(gpkg: Path, layer_name: str, output: Path, width: int = 1200,
           background: str = "#f4f1ea", margin: float = 0.03) -> None:
    """Draw ``layer_name`` of ``gpkg`` over its own extent (plus ``margin``) to ``output``."""
    layer = QgsVectorLayer(f"{gpkg}|layername={layer_name}", layer_name, "ogr")
    if not layer.isValid():
        raise SystemExit(f"error: cannot open layer {layer_name!r} of {gpkg}")
    _, styled = layer.loadDefaultStyle()
    if not styled:
        print(f"warning: {gpkg} has no default style for {layer_name!r}; drawing QGIS's "
              "default symbol", file=sys.stderr)
    extent = layer.extent()
    extent.grow(max(extent.width(), extent.height()) * margin)
    height = max(1, round(width * extent.height() / extent.width()))
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor(background))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp{output.suffix}")
    if not image.save(str(tmp), "PNG"):
        raise SystemExit(f"error: could not write {output}")
    os.replace(tmp, output)  # never a half-written PNG
    del job, settings, layer  # QGIS crashes at exit if they outlive the application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gpkg", type=Path)
    parser.add_argument("layer")
    parser.add_argument("output", type=Path)
    parser.add_argument("--width", type=int, default=1200, help="pixels [default: 1200]")
    args = parser.parse_args()
    app = QgsApplication([], False)
    app.initQgis()
    try:
        render(args.gpkg, args.layer, args.output, width=args.width)
    finally:
        app.exitQgis()
    print(args.output)


if __name__ == "__main__":
    main()
