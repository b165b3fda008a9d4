"""Open files in real QGIS (headless) and print how each is styled, one JSON line per file.

Run with the system Python that has QGIS (``/usr/bin/python3``), not the project's venv: QGIS's
Python bindings live there. Used by tests that check outputs open styled in QGIS itself.
"""

import json
import os
import sys

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("PROJ_DATA", "/usr/share/proj")

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer  # noqa: E402

app = QgsApplication([], False)
app.initQgis()
for path in sys.argv[1:]:
    if path.endswith(".gpkg"):
        layer = QgsVectorLayer(f"{path}|layername=cells", "cells", "ogr")
    else:
        layer = QgsRasterLayer(path, "raster")
    _, loaded = layer.loadDefaultStyle()
    renderer = layer.renderer()
    record = {"path": path, "valid": layer.isValid(), "style_loaded": loaded,
              "renderer": renderer.type(), "crs": layer.crs().authid()}
    if renderer.type() == "graduatedSymbol":
        record["attribute"] = renderer.classAttribute()
        record["classes"] = len(renderer.ranges())
    print(json.dumps(record))
    del renderer, layer  # QGIS segfaults at exit if layers outlive the application
app.exitQgis()
