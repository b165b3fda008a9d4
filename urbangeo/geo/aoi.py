"""Areas of interest: one (multi)polygon with its CRS, from a vector file or a bounding box.

Every later stage grids, clips and samples against this one geometry, so all the ways an AOI
can be wrong (no CRS, invalid rings, points instead of polygons, a bbox typed in the wrong
order) are caught here with a message that says how to fix the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from urbangeo.errors import CRSError, GeometryError, InputError
from urbangeo.progress import SILENT, Progress

_POLYGONAL = {"Polygon", "MultiPolygon"}


@dataclass(frozen=True)
class AOI:
    """The area of interest: a non-empty (multi)polygon in ``crs``.

    A geographic AOI that crosses the antimeridian keeps continuous longitudes (e.g. 179.5 to
    180.5), so its geometry is never split into two halves at opposite ends of the map.
    """

    geometry: BaseGeometry
    crs: pyproj.CRS
    source: str  # "bbox:..." or the vector file's absolute path, recorded in the grid metadata
    n_repaired: int = 0
    layer: str | None = None  # the layer read from a multi-layer file


def parse_crs(text: str | int | pyproj.CRS, what: str = "CRS") -> pyproj.CRS:
    """A :class:`pyproj.CRS` from user input, or a :class:`CRSError` naming the bad value."""
    try:
        return pyproj.CRS.from_user_input(text)
    except pyproj.exceptions.CRSError as exc:
        raise CRSError(
            f"{what} '{text}' is not a coordinate reference system PROJ knows: "
            "give an EPSG code such as EPSG:4326 or EPSG:32610"
        ) from exc


def aoi_from_bbox(text: str, crs: str | int | pyproj.CRS = "EPSG:4326") -> AOI:
    """An AOI from ``"minx,miny,maxx,maxy"`` in ``crs`` (longitude/latitude by default).

    In a geographic CRS, ``minx > maxx`` means the box crosses the antimeridian (e.g.
    ``179.5,-17,-179.5,-16``); it becomes one box with continuous longitudes (179.5..180.5).
    """
    bbox_crs = parse_crs(crs, "bbox CRS")
    parts = [part.strip() for part in text.split(",")]
    hint = "give --bbox as minx,miny,maxx,maxy, e.g. --bbox -122.23,37.57,-122.05,37.67"
    if len(parts) != 4:
        raise InputError(f"bbox '{text}' has {len(parts)} values, not 4: {hint}")
    try:
        minx, miny, maxx, maxy = (float(part) for part in parts)
    except ValueError as exc:
        raise InputError(f"bbox '{text}' has a value that is not a number: {hint}") from exc
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InputError(f"bbox '{text}' has a non-finite value: {hint}")
    if miny >= maxy:
        raise InputError(f"bbox '{text}': miny ({miny:g}) must be below maxy ({maxy:g}): {hint}")
    if bbox_crs.is_geographic:
        if not (-90 <= miny and maxy <= 90):
            raise InputError(
                f"bbox '{text}': latitudes must lie in -90..90 (got {miny:g}..{maxy:g}); "
                f"is the order lon,lat,lon,lat? {hint}"
            )
        if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
            raise InputError(
                f"bbox '{text}': longitudes must lie in -180..180 (got {minx:g}, {maxx:g}); {hint}"
            )
        if minx == maxx:
            raise InputError(f"bbox '{text}' has zero width: {hint}")
        if minx > maxx:  # crosses the antimeridian: keep the box continuous east of 180
            if maxx - minx + 360.0 > 180.0:
                raise InputError(
                    f"bbox '{text}': minx > maxx means a box across the antimeridian, but this "
                    f"one would span {maxx - minx + 360.0:g}° of longitude; did you swap minx "
                    f"and maxx? {hint}")
            maxx += 360.0
    elif minx >= maxx:
        raise InputError(f"bbox '{text}': minx ({minx:g}) must be below maxx ({maxx:g}): {hint}")
    else:
        _check_in_area_of_use(text, (minx, miny, maxx, maxy), bbox_crs)
    return AOI(shapely.box(minx, miny, maxx, maxy), bbox_crs, f"bbox:{text}")


def _check_in_area_of_use(text: str, bounds: tuple[float, float, float, float],
                          crs: pyproj.CRS) -> None:
    """Refuse a projected bbox that lies outside its CRS's area of use: almost always degrees
    typed with a metric --bbox-crs, which would otherwise grid a box a few metres wide."""
    area = crs.area_of_use
    if area is None:
        return
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    west, south, east, north = to_lonlat.transform_bounds(*bounds)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        inside = False
    else:
        margin = 1.0  # degrees: UTM and friends are usable a little past their official zone
        inside = (west < area.east + margin and east > area.west - margin
                  and south < area.north + margin and north > area.south - margin)
    if not inside:
        degrees = all(abs(v) <= 180 for v in bounds)
        raise InputError(
            f"bbox '{text}' lies outside where --bbox-crs {crs.to_string()} is defined "
            f"(longitude {area.west:g}..{area.east:g}, latitude {area.south:g}..{area.north:g})"
            + ("; these look like degrees: use --bbox-crs EPSG:4326" if degrees else "")
        )


def load_aoi(path: str | Path, *, layer: str | None = None, progress: Progress = SILENT) -> AOI:
    """Read every polygon of a vector file (GeoJSON, GeoPackage, Shapefile...) as one AOI.

    Invalid polygons are repaired with :func:`shapely.make_valid` (the count is reported);
    non-polygon parts (points, lines) are dropped; the result is the union of what remains.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"AOI file {path} does not exist: check the path")
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except pyogrio.errors.DataSourceError as exc:
        raise InputError(
            f"cannot read AOI file {path} as vector data ({exc}): give a GeoJSON, GeoPackage "
            "or Shapefile"
        ) from exc
    if layer is None and len(layers) > 1:
        raise InputError(
            f"AOI file {path} has several layers ({', '.join(layers)}): pick one with --layer"
        )
    if layer is not None and layer not in layers:
        raise InputError(f"AOI file {path} has no layer '{layer}' (it has: {', '.join(layers)})")
    frame = pyogrio.read_dataframe(path, layer=layer or layers[0], columns=[])
    if frame.crs is None:
        raise CRSError(
            f"AOI file {path} has no CRS: set one (QGIS: Layer > Set CRS, or "
            "`ogr2ogr -a_srs EPSG:4326 fixed.gpkg in.shp`) and retry"
        )
    geoms = np.asarray(frame.geometry.values, dtype=object)
    geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    invalid = ~shapely.is_valid(geoms)
    n_repaired = int(invalid.sum())
    if n_repaired:
        geoms[invalid] = shapely.make_valid(geoms[invalid])
        noun = "geometry" if n_repaired == 1 else "geometries"
        progress.info(f"AOI: repaired {n_repaired} invalid {noun}")
    geometry = _polygonal_union(geoms, str(path))
    return AOI(geometry, pyproj.CRS(frame.crs), str(path.resolve()), n_repaired,
               layer or layers[0])


def _polygonal_union(geoms: np.ndarray, source: str) -> BaseGeometry:
    parts = shapely.get_parts(geoms) if len(geoms) else np.array([], dtype=object)
    # make_valid may return collections that mix polygons with slivers of lines: flatten twice
    parts = shapely.get_parts(parts) if len(parts) else parts
    types = shapely.get_type_id(parts) if len(parts) else np.array([], dtype=int)
    polygons = parts[(types == 3) | (types == 6)]
    if len(polygons) == 0:
        found = sorted({g.geom_type for g in parts}) or ["no geometry"]
        raise GeometryError(
            f"AOI {source} has no polygons (found: {', '.join(found)}): draw or buffer the area "
            "as polygons"
        )
    union = shapely.union_all(polygons)
    if union.is_empty or union.area == 0:
        raise GeometryError(
            f"AOI {source} is empty after repairing its geometry: check the polygons"
        )
    if union.geom_type not in _POLYGONAL:  # union of touching polygons can leave a collection
        union = shapely.multipolygons(
            [p for p in shapely.get_parts(union) if p.geom_type == "Polygon"]
        )
    return union
