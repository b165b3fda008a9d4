"""Per-cell facts from a user's vector layer (OSM POIs, roads...) for the ``describe`` captions.

The paper's summaries gain from spatial context such as POIs (§2, Definition 3); a user who has
a POI or road GeoPackage can feed it here. Each cell gets a record
``{"count": n, "categories": {value: n}, "length_km": km}``: ``categories`` only with a
``category_field``, ``length_km`` (the length clipped to the cell) only for line layers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from urbangeo.errors import CRSError, InputError
from urbangeo.progress import SILENT, Progress


def _read_layer(path: Path, layer: str | None) -> gpd.GeoDataFrame:
    if not path.exists():
        raise InputError(f"vector layer {path} does not exist: pass a GeoPackage, GeoJSON or "
                         "shapefile path")
    try:
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        layers = ""
        try:
            layers = f" (layers: {', '.join(pyogrio.list_layers(path)[:, 0])})"
        except pyogrio.errors.DataSourceError:
            pass
        raise InputError(f"cannot read layer {layer!r} of {path}{layers}: {exc}") from exc


def vector_context(cells: gpd.GeoDataFrame, layer_path: str | os.PathLike[str], *,
                   layer: str | None = None, category_field: str | None = None,
                   progress: Progress = SILENT) -> dict[str, dict[str, Any]]:
    """Count (and categorise, and measure for lines) the features of a layer inside each cell.

    Features are reprojected to the cells' CRS and matched with a spatial-index join; a point
    on a shared border counts in the cell listed first, so totals equal the feature count.
    Every cell gets a record, with ``count`` 0 where nothing falls.
    """
    if cells.crs is None:
        raise CRSError("the cells have no CRS: re-create them with `urbangeo grid`")
    feats = _read_layer(Path(layer_path), layer)
    if feats.crs is None:
        raise CRSError(f"{layer_path} has no CRS: set one in QGIS (Layer > Set CRS) or with "
                       "`ogr2ogr -a_srs`")
    if category_field is not None and category_field not in feats.columns:
        raise InputError(f"{layer_path} has no field {category_field!r}; fields are: "
                         f"{', '.join(c for c in feats.columns if c != 'geometry')}")
    progress.start("context", 1, f"joining {len(feats)} features to {len(cells)} cells")
    feats = feats[~feats.geometry.is_empty & feats.geometry.notna()].to_crs(cells.crs)
    grid = gpd.GeoDataFrame({"cell_id": cells["cell_id"].astype(str).to_numpy()},
                            geometry=cells.geometry.to_numpy(), crs=cells.crs)
    out: dict[str, dict[str, Any]] = {cid: {"count": 0} for cid in grid["cell_id"]}
    kinds = set(feats.geometry.geom_type)
    is_line = bool(kinds) and kinds <= {"LineString", "MultiLineString"}
    pairs = gpd.sjoin(feats.reset_index(drop=True), grid, predicate="intersects", how="inner")
    if kinds <= {"Point", "MultiPoint"}:
        pairs = pairs[~pairs.index.duplicated(keep="first")]  # border points count once
    for cid, n in pairs.groupby("cell_id").size().items():
        out[str(cid)]["count"] = int(n)
    if category_field is not None:
        for cid in out:
            out[cid]["categories"] = {}
        values = pairs[category_field].fillna("unknown").astype(str)
        for (cid, value), n in values.groupby([pairs["cell_id"], values]).size().items():
            out[str(cid)]["categories"][value] = int(n)
    if is_line:
        if cells.crs.is_geographic:
            raise CRSError(f"the cells' CRS {cells.crs.to_string()} is in degrees, so line "
                           "lengths would be meaningless: use cells in a projected CRS")
        cell_geom = grid.geometry.to_numpy()[pairs["index_right"].to_numpy()]
        length_m = shapely.length(shapely.intersection(pairs.geometry.to_numpy(), cell_geom))
        for cid in out:
            out[cid]["length_km"] = 0.0
        sums = _sum_by_key(pairs["cell_id"].to_numpy(), length_m)
        for cid, metres in sums.items():
            out[cid]["length_km"] = round(metres / 1000.0, 3)
    progress.advance(1)
    progress.finish()
    return out


def _sum_by_key(keys: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Sum ``values`` per key."""
    uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
    return dict(zip(uniq.tolist(), np.bincount(inverse, weights=values).tolist(), strict=True))
