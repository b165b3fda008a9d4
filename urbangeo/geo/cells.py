"""The cells GeoPackage: one layer of cells, a metadata table, and a QGIS default style.

Every stage (grid, chips, indicators, caption, predict) reads a :class:`CellsFile`, changes
columns or metadata sections, and writes the whole file back atomically, so a killed job never
leaves a GeoPackage that QGIS or the next stage cannot open.

Metadata lives in table ``urbangeo_metadata`` (key TEXT, value JSON): ``grid`` (how the cells
were made, enough to rebuild and check them), and one section per later stage (``chips``,
``indicators``, ``captions``...). The style goes in QGIS's ``layer_styles`` table with
``useAsDefault`` set, which is what makes QGIS open the layer styled.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
from pyogrio.errors import DataSourceError

from urbangeo._atomic import atomic_path
from urbangeo.errors import InputError

CELLS_LAYER = "cells"
METADATA_TABLE = "urbangeo_metadata"


@dataclass
class CellsFile:
    """A layer of cells plus its JSON metadata sections and optional QGIS style (QML)."""

    cells: gpd.GeoDataFrame
    metadata: dict[str, Any] = field(default_factory=dict)
    style_qml: str | None = None
    layer: str = CELLS_LAYER


def _require_gpkg(path: Path) -> None:
    if not path.exists():
        raise InputError(f"cells file {path} does not exist: create it with `urbangeo grid`")
    if path.suffix.lower() != ".gpkg":
        raise InputError(f"{path} is not a GeoPackage (.gpkg): cells files are GeoPackages")


def _unreadable(path: Path, exc: Exception) -> InputError:
    reason = str(exc).split(";")[0].replace(f"'{path}' ", "").strip().rstrip(".")
    return InputError(f"{path} is not a readable GeoPackage ({reason}): it may be damaged or "
                      "another kind of file; remake it with `urbangeo grid`")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata sections of a cells GeoPackage (empty dict when it has none)."""
    path = Path(path)
    _require_gpkg(path)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            has = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (METADATA_TABLE,)
            ).fetchone()
            if not has:
                return {}
            rows = con.execute(f"SELECT key, value FROM {METADATA_TABLE}").fetchall()
        return {key: json.loads(value) for key, value in rows}
    except (sqlite3.DatabaseError, ValueError) as exc:  # not SQLite, or damaged JSON
        raise _unreadable(path, exc) from None


def _read_style(path: Path, layer: str) -> str | None:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        if not con.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='layer_styles'"
        ).fetchone():
            return None
        row = con.execute(
            "SELECT styleQML FROM layer_styles WHERE f_table_name=? AND useAsDefault=1 "
            "ORDER BY id DESC LIMIT 1", (layer,)
        ).fetchone()
    return row[0] if row else None


def read_cells(path: str | Path, layer: str = CELLS_LAYER) -> CellsFile:
    """Read a cells GeoPackage written by :func:`write_cells` (or by hand, if it has the layer)."""
    path = Path(path)
    _require_gpkg(path)
    try:
        layers = {name for name, _ in pyogrio.list_layers(path)}
    except DataSourceError as exc:
        raise _unreadable(path, exc) from None
    if layer not in layers:
        raise InputError(
            f"{path} has no layer '{layer}' (it has: {', '.join(sorted(layers)) or 'none'}); "
            "make a cells file with `urbangeo grid`"
        )
    try:
        cells = pyogrio.read_dataframe(path, layer=layer)
    except DataSourceError as exc:
        raise _unreadable(path, exc) from None
    if "cell_id" not in cells.columns:
        raise InputError(f"layer '{layer}' of {path} has no cell_id column: "
                         "remake it with `urbangeo grid`")
    return CellsFile(cells=cells, metadata=read_metadata(path), style_qml=_read_style(path, layer),
                     layer=layer)


_LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
  id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
  f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT,
  styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
  update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))
"""


def _write_metadata(con: sqlite3.Connection, metadata: dict[str, Any]) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {METADATA_TABLE} (key TEXT PRIMARY KEY, value TEXT)")
    con.execute(f"DELETE FROM {METADATA_TABLE}")
    con.executemany(
        f"INSERT INTO {METADATA_TABLE} (key, value) VALUES (?, ?)",
        [(key, json.dumps(value, sort_keys=True)) for key, value in metadata.items()],
    )
    _register_attributes_table(con, METADATA_TABLE)


def _register_attributes_table(con: sqlite3.Connection, table: str) -> None:
    """List ``table`` in ``gpkg_contents``: GDAL (and so QGIS) only sees registered tables, and
    QGIS reads its default style through GDAL."""
    con.execute(
        "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, last_change) "
        "VALUES (?, 'attributes', ?, ?)",
        (table, table, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")),
    )


def _write_style(con: sqlite3.Connection, cf: CellsFile) -> None:
    if not cf.style_qml:
        return
    geometry_column = con.execute(
        "SELECT column_name FROM gpkg_geometry_columns WHERE table_name=?", (cf.layer,)
    ).fetchone()[0]
    con.execute(_LAYER_STYLES_DDL)
    _register_attributes_table(con, "layer_styles")
    con.execute("DELETE FROM layer_styles WHERE f_table_name=?", (cf.layer,))
    con.execute(
        "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
        "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, "
        "ui) VALUES ('', '', ?, ?, ?, ?, '', 1, 'written by urbangeo', '', '')",
        (cf.layer, geometry_column, f"{cf.layer} (urbangeo)", cf.style_qml),
    )


def write_cells(path: str | Path, cf: CellsFile, *, extra_layers: Sequence[CellsFile] = ()) -> None:
    """Write ``cf`` (and optional extra layers) to ``path`` atomically, replacing any old file.

    Extra layers (e.g. ``predictions`` beside ``cells``) get their own style rows; metadata is
    taken from ``cf`` alone.
    """
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise InputError(f"output {path} must end in .gpkg (cells are written as a GeoPackage)")
    if cf.cells.crs is None:
        raise InputError("cells have no CRS: every cells layer must carry its grid CRS")
    with atomic_path(path) as tmp:
        for layer_file in (cf, *extra_layers):
            # GeoPackage 1.2: what QGIS 3.22 LTR's GDAL reads without warnings.
            pyogrio.write_dataframe(layer_file.cells, tmp, layer=layer_file.layer, driver="GPKG",
                                    dataset_options={"VERSION": "1.2"})
        with sqlite3.connect(tmp) as con:
            _write_metadata(con, cf.metadata)
            for layer_file in (cf, *extra_layers):
                _write_style(con, layer_file)
        for sidecar in tmp.parent.glob(tmp.name + "-*"):  # sqlite -wal/-shm, if any
            sidecar.unlink()
