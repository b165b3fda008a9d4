"""QGIS styles: well-formed QML with the renderer QGIS expects, stored where QGIS looks."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest

from urbangeo.errors import DataError, InputError
from urbangeo.geo.cells import read_cells, write_cells
from urbangeo.geo.grid import build_grid
from urbangeo.geo.rasterize import write_cell_raster
from urbangeo.geo.styles import (
    FILL_ALPHA,
    cells_style,
    graduated_style,
    outline_style,
    ramp_colors,
    raster_style,
)


def _parse(qml: str) -> ET.Element:
    assert qml.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(qml.split("\n", 1)[1])
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")
    return root


def _layer_options(symbol: ET.Element) -> dict[str, str]:
    layer = symbol.find("layer")
    assert layer is not None and layer.get("class") == "SimpleFill"
    return {o.get("name"): o.get("value") for o in layer.findall("Option/Option")}


def test_outline_style_has_no_fill() -> None:
    root = _parse(outline_style())
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "singleSymbol"
    options = _layer_options(renderer.find("symbols/symbol"))
    assert options["style"] == "no" and options["outline_style"] == "solid"


def test_graduated_style_uses_quantile_classes_and_ramp() -> None:
    values = np.random.default_rng(3).lognormal(size=1000)
    root = _parse(graduated_style(values, "pop", classes=5, ramp="YlOrRd"))
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "graduatedSymbol" and renderer.get("attr") == "pop"
    ranges = renderer.findall("ranges/range")
    assert len(ranges) == 5
    lowers = [float(r.get("lower")) for r in ranges]
    uppers = [float(r.get("upper")) for r in ranges]
    assert lowers[0] == values.min() and uppers[-1] == values.max()
    assert lowers[1:] == uppers[:-1]
    counts = [((values >= lo) & (values <= up)).sum()
              for lo, up in zip(lowers, uppers, strict=True)]
    assert max(counts) - min(counts) <= 2  # quantiles: equal-count classes
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    colors = [_layer_options(symbols[r.get("symbol")])["color"] for r in ranges]
    expected = [f"{r},{g},{b},{FILL_ALPHA}" for r, g, b in ramp_colors("YlOrRd", 5)]
    assert colors == expected and colors[0] != colors[-1]
    assert renderer.find("classificationMethod").get("id") == "Quantile"


def test_graduated_style_with_few_distinct_values() -> None:
    root = _parse(graduated_style([2.0, 2.0, 2.0, np.nan], "x"))
    assert len(root.findall("renderer-v2/ranges/range")) == 1
    with pytest.raises(DataError, match="no numeric values"):
        graduated_style([np.nan, np.nan], "x")


def test_cells_style_checks_the_column() -> None:
    cells = pd.DataFrame({"cell_id": ["a", "b"], "pop": [1.0, 5.0]})
    assert "graduatedSymbol" in cells_style(cells, "pop")
    assert "singleSymbol" in cells_style(cells)
    with pytest.raises(InputError, match="not a column.*pop"):
        cells_style(cells, "gdp")
    with pytest.raises(InputError, match="not numeric"):
        cells_style(cells, "cell_id")
    with pytest.raises(InputError, match="unknown colour ramp"):
        ramp_colors("rainbow", 3)


def test_raster_style_is_singleband_pseudocolor() -> None:
    root = _parse(raster_style(10.0, 50.0, ramp="viridis"))
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
    items = renderer.findall("rastershader/colorrampshader/item")
    values = [float(i.get("value")) for i in items]
    assert values[0] == 10.0 and values[-1] == 50.0 and values == sorted(values)
    assert items[0].get("color") == "#440154"


def test_grid_output_carries_default_styles_in_layer_styles(tmp_path: Path) -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67")
    cf.cells["density"] = np.arange(len(cf.cells), dtype=float)
    cf.style_qml = cells_style(cf.cells, "density")
    write_cells(tmp_path / "cells.gpkg", cf)
    with sqlite3.connect(tmp_path / "cells.gpkg") as con:
        rows = con.execute(
            "SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    assert [(name, default) for name, default, _ in rows] == [("cells", 1)]
    assert 'attr="density"' in rows[0][2]
    assert read_cells(tmp_path / "cells.gpkg").style_qml == rows[0][2]


def test_styles_table_is_visible_through_gdal(tmp_path: Path) -> None:
    """QGIS reads a GeoPackage's default style through GDAL, which only sees tables listed in
    gpkg_contents; an unlisted layer_styles table is silently ignored by QGIS."""
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67")
    cf.style_qml = cells_style(cf.cells, None)
    write_cells(tmp_path / "cells.gpkg", cf)
    assert "layer_styles" in {name for name, _ in pyogrio.list_layers(tmp_path / "cells.gpkg")}
    with sqlite3.connect(tmp_path / "cells.gpkg") as con:
        (stamp,) = con.execute("SELECT update_time FROM layer_styles").fetchone()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)


SYSTEM_PYTHON = "/usr/bin/python3"


def _has_qgis() -> bool:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists() or not _has_qgis(),
                    reason="QGIS's Python bindings (Debian python3-qgis) are not installed")
def test_real_qgis_opens_cells_and_cog_styled(tmp_path: Path) -> None:
    cf = build_grid(bbox="-122.23,37.57,-122.05,37.67")
    cf.cells["density"] = np.arange(len(cf.cells), dtype=float)
    cf.style_qml = cells_style(cf.cells, "density")
    write_cells(tmp_path / "cells.gpkg", cf)
    write_cell_raster(cf, ["density"], tmp_path / "density.tif")
    script = Path(__file__).resolve().parents[1] / "qgis_open.py"
    out = subprocess.run([SYSTEM_PYTHON, str(script), str(tmp_path / "cells.gpkg"),
                          str(tmp_path / "density.tif")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    vector, raster = (json.loads(line) for line in out.splitlines() if line.startswith("{"))
    assert vector["valid"] and vector["style_loaded"]
    assert (vector["renderer"], vector["attribute"]) == ("graduatedSymbol", "density")
    assert vector["crs"] == "EPSG:32610"
    assert raster["valid"] and raster["style_loaded"]
    assert raster["renderer"] == "singlebandpseudocolor"
