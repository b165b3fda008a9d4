"""scripts/render_map.py draws a layer with its saved style, headless, through QGIS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qgis.PyQt.QtGui import QColor, QImage

from .conftest import REPO


def test_renders_the_styled_cells_to_png(captioned_cells: Path, tmp_path: Path) -> None:
    png = tmp_path / "map.png"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "render_map.py"),
                           str(captioned_cells), "cells", str(png), "--width", "400"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no default style" not in done.stderr
    image = QImage(str(png))
    assert (image.width(), image.height()) == (400, 400)  # a square city, its own aspect
    assert image.pixelColor(2, 2) == QColor("#f4f1ea")  # plain background in the margin
    # the graduated population style: several fill colours across the cells
    colours = {image.pixel(x, y) for x in range(20, 380, 9) for y in range(20, 380, 9)}
    assert len(colours) >= 4
    assert not list(tmp_path.glob(".map.*"))
