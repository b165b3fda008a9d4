"""Square cells over an AOI, anchored so the same place always gets the same ``cell_id``.

Two schemes:

* ``metric`` (default): squares of ``cell_size`` metres in a projected CRS, anchored on
  multiples of ``cell_size`` from the CRS origin. Without ``crs`` the AOI centroid's UTM zone
  is used (EPSG:326xx north, 327xx south); above 84°N / below 80°S the Universal Polar
  Stereographic CRS (EPSG:32661 / EPSG:32761) is chosen automatically. An auto-chosen CRS must
  keep the linear scale error within :data:`MAX_SCALE_ERROR` over the whole AOI (UTM: about
  900 km either side of the zone's central meridian; UPS: poleward of about 77°), otherwise
  the AOI is refused with a message to pass ``crs`` or split it.
* ``xyz``: web-mercator (EPSG:3857) tiles at one zoom, ids ``z{z}-x{x}-y{y}``, so cells line
  up with slippy-map tiles; their true ground size (tile size × cos(latitude)) is reported.

AOIs across the antimeridian are handled by keeping longitudes continuous (179.5..180.5) before
projecting. An AOI drawn in a projected CRS goes straight from its CRS to the grid CRS (lon/lat
only locates it and checks the scale), so one drawn around a pole keeps its shape.

Cell selection is vectorised: only cells on the AOI's outline get geometry tests; the rest are
decided by one point-in-polygon test of their centres, in row batches, so a million-cell grid
takes seconds.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

import urbangeo
from urbangeo.errors import CRSError, GeometryError, InputError
from urbangeo.geo.aoi import AOI, aoi_from_bbox, load_aoi, parse_crs
from urbangeo.geo.cells import CellsFile
from urbangeo.geo.crs import (
    WEB_MERCATOR,
    WEB_MERCATOR_HALF,
    WEB_MERCATOR_MAX_LAT,
    WEB_MERCATOR_RADIUS,
    WGS84,
    crs_string,
)
from urbangeo.geo.styles import outline_style
from urbangeo.progress import SILENT, Progress

#: Largest linear scale error (|k - 1|) accepted anywhere in the AOI for an auto-chosen CRS:
#: a nominal 1000 m cell is 990-1010 m on the ground.
MAX_SCALE_ERROR = 0.01
UTM_NORTH_LIMIT, UTM_SOUTH_LIMIT = 84.0, -80.0
UPS_NORTH, UPS_SOUTH = 32661, 32761
MAX_ZOOM = 24
#: Candidate cells tested per vectorised batch (bounds memory for huge AOIs).
BATCH_CELLS = 250_000
#: Refuse grids whose bounding box holds more candidates than this (a typo in --cell-size).
MAX_CANDIDATES = 200_000_000
_SEGMENT_DEG = 0.01  # densify lon/lat edges before projecting: straight lines bend
_SEGMENT_PROJECTED = 1000.0  # the same for edges drawn in a projected CRS (its units)
_SCALE_STEP_DEG, _SCALE_STEP_PROJECTED = 0.1, 10_000.0  # outline spacing for the scale check


@dataclass(frozen=True)
class GridSpec:
    """Where cell (col, row) lies: ``origin`` + index × ``cell_size`` in ``crs``.

    Metric rows count northwards from the origin; xyz rows (tile y) count southwards from the
    top-left corner of the web-mercator square, as slippy maps do.
    """

    scheme: str
    crs: pyproj.CRS
    cell_size: float
    origin: tuple[float, float]
    zoom: int | None = None

    @property
    def rows_down(self) -> bool:
        return self.scheme == "xyz"

    def bounds_of(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """minx, miny, maxx, maxy arrays of the given cells."""
        s, (x0, y0) = self.cell_size, self.origin
        minx = x0 + cols * s
        if self.rows_down:
            maxy = y0 - rows * s
            return minx, maxy - s, minx + s, maxy
        miny = y0 + rows * s
        return minx, miny, minx + s, miny + s

    def boxes(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return shapely.box(*self.bounds_of(cols, rows))

    def index_range(self, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """Column and row ranges [c0, c1) x [r0, r1) whose cells cover ``bounds``."""
        minx, miny, maxx, maxy = bounds
        s, (x0, y0) = self.cell_size, self.origin
        c0, c1 = math.floor((minx - x0) / s), math.ceil((maxx - x0) / s)
        if self.rows_down:
            r0, r1 = math.floor((y0 - maxy) / s), math.ceil((y0 - miny) / s)
        else:
            r0, r1 = math.floor((miny - y0) / s), math.ceil((maxy - y0) / s)
        return c0, max(c1, c0 + 1), r0, max(r1, r0 + 1)

    def rows_north_to_south(self, r0: int, r1: int) -> range:
        return range(r0, r1) if self.rows_down else range(r1 - 1, r0 - 1, -1)

    def cell_ids(self, cols: np.ndarray, rows: np.ndarray) -> list[str]:
        """Readable ids: ``32610-1000-E584-N4140`` (metric) or ``z15-x5276-y12712`` (xyz)."""
        pairs = zip(cols.tolist(), rows.tolist(), strict=True)
        if self.scheme == "xyz":
            return [f"z{self.zoom}-x{c}-y{r}" for c, r in pairs]
        prefix = f"{crs_tag(self.crs)}-{self.cell_size:g}"
        return [f"{prefix}-E{c}-N{r}" for c, r in pairs]


def crs_tag(crs: pyproj.CRS) -> str:
    """The EPSG code, or a short stable hash of the WKT for custom CRSs."""
    epsg = crs.to_epsg()
    if epsg is not None:
        return str(epsg)
    return "crs" + hashlib.sha1(crs.to_wkt().encode()).hexdigest()[:8]


# -- the AOI in longitude/latitude ------------------------------------------------------------


def lonlat_geometry(aoi: AOI) -> BaseGeometry:
    """The AOI in EPSG:4326 with continuous longitudes (may exceed 180 across the antimeridian)."""
    geom = aoi.geometry
    if not aoi.crs.equals(WGS84):
        step = _SEGMENT_DEG if aoi.crs.is_geographic else _SEGMENT_PROJECTED
        geom = shapely.segmentize(geom, step)
        transformer = pyproj.Transformer.from_crs(aoi.crs, WGS84, always_xy=True)
        geom = _transform(geom, transformer)
    minx, miny, maxx, maxy = geom.bounds
    if not (-90.0 <= miny and maxy <= 90.0):
        raise GeometryError(f"AOI latitudes {miny:g}..{maxy:g} fall outside -90..90: check the CRS")
    if maxx - minx > 180.0 and not _polar_side(geom):
        # Parts on both sides of ±180 (e.g. Fiji): shift the western ones east by 360°.
        geom = shapely.transform(geom, lambda xy: np.where(xy < 0, xy + [360.0, 0.0], xy))
        minx, _, maxx, _ = geom.bounds
        if maxx - minx > 180.0:
            raise GeometryError(
                f"AOI spans {maxx - minx:.0f}° of longitude: no single grid fits it; split it "
                "into regions and grid each"
            )
    return geom


def _polar_side(lonlat: BaseGeometry) -> int:
    """+1 / -1 when the AOI belongs on a polar grid (centroid beyond UTM's limits, or it
    reaches a pole, where longitudes stop meaning anything), else 0."""
    _, miny, _, maxy = lonlat.bounds
    return _polar(lonlat.centroid.y, miny, maxy)


def _polar(centre_lat: float, min_lat: float, max_lat: float) -> int:
    if centre_lat > UTM_NORTH_LIMIT or max_lat >= 89.999:
        return 1
    if centre_lat < UTM_SOUTH_LIMIT or min_lat <= -89.999:
        return -1
    return 0


@dataclass(frozen=True)
class Located:
    """Where an AOI lies on the globe: what choosing and checking a grid CRS needs.

    Built from the AOI in its own CRS, never from a lon/lat polygon of a projected AOI: one
    drawn around a pole has no lon/lat polygon (its outline becomes a line of latitude).
    """

    centre: tuple[float, float]  # lon (may exceed 180), lat of the AOI's centroid
    outline: np.ndarray = field(repr=False)  # (n, 2) lon/lat points along the AOI's outline
    pole: int = 0  # +1 / -1 when the AOI encloses the North / South Pole
    lonlat: BaseGeometry | None = field(default=None, repr=False)  # for lon/lat AOIs

    @property
    def polar(self) -> int:
        """+1 / -1 when the AOI belongs on a polar grid, else 0."""
        lats = self.outline[:, 1]
        return self.pole or _polar(self.centre[1], float(lats.min()), float(lats.max()))


def locate(aoi: AOI) -> Located:
    """The AOI's centre, outline and enclosed pole in lon/lat (see :class:`Located`)."""
    if aoi.crs.is_geographic:
        lonlat = lonlat_geometry(aoi)
        outline = shapely.get_coordinates(shapely.segmentize(lonlat.boundary, _SCALE_STEP_DEG))
        return Located((lonlat.centroid.x, lonlat.centroid.y), outline, 0, lonlat)
    to_lonlat = pyproj.Transformer.from_crs(aoi.crs, WGS84, always_xy=True)
    ring = shapely.get_coordinates(shapely.segmentize(aoi.geometry.boundary,
                                                      _SCALE_STEP_PROJECTED))
    outline = np.column_stack(to_lonlat.transform(ring[:, 0], ring[:, 1]))
    outline = outline[np.isfinite(outline).all(axis=1)]
    centroid = aoi.geometry.centroid
    centre = to_lonlat.transform(centroid.x, centroid.y)
    if not (len(outline) and np.isfinite(centre).all()):
        raise GeometryError(f"AOI {aoi.source} cannot be placed on the globe from its CRS "
                            f"{crs_string(aoi.crs)}: check the CRS")
    return Located((float(centre[0]), float(centre[1])), outline, _pole_inside(aoi))


def _pole_inside(aoi: AOI) -> int:
    """+1 / -1 when the (projected) AOI encloses the North / South Pole, else 0."""
    to_aoi = pyproj.Transformer.from_crs(WGS84, aoi.crs, always_xy=True)
    for side in (1, -1):
        x, y = to_aoi.transform(0.0, 90.0 * side)
        if math.isfinite(x) and math.isfinite(y) and shapely.contains_xy(aoi.geometry, x, y):
            return side
    return 0


def _transform(geom: BaseGeometry, transformer: pyproj.Transformer) -> BaseGeometry:
    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(geom, fn)
    if not np.isfinite(shapely.get_coordinates(out)).all():
        raise GeometryError("AOI cannot be projected to the grid CRS (infinite coordinates): "
                            "choose a --crs that covers the whole AOI")
    return shapely.make_valid(out)


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
    return (np.asarray(lon) + 180.0) % 360.0 - 180.0


# -- choosing the grid CRS --------------------------------------------------------------------


def auto_crs(where: Located) -> pyproj.CRS:
    """UTM zone of the AOI centroid, or UPS north/south beyond UTM's latitude limits."""
    polar = where.polar
    if polar:
        return pyproj.CRS.from_epsg(UPS_NORTH if polar > 0 else UPS_SOUTH)
    lon, lat = float(_wrap_lon(where.centre[0])), where.centre[1]
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return pyproj.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def scale_error(where: Located, crs: pyproj.CRS) -> float:
    """Largest |k - 1| (linear scale error) of ``crs`` over the AOI's outline."""
    coords = where.outline
    factors = pyproj.Proj(crs).get_factors(_wrap_lon(coords[:, 0]), coords[:, 1])
    k = np.asarray(factors.meridional_scale)
    return float(np.nanmax(np.abs(k - 1.0)))


def _check_user_crs(crs: pyproj.CRS, where: Located) -> None:
    units = {axis.unit_name for axis in crs.axis_info}
    if crs.is_projected and units <= {"metre", "meter"}:
        return
    suggestion = crs_string(auto_crs(where))
    kind = "geographic (degrees)" if crs.is_geographic else f"not in metres ({', '.join(units)})"
    raise CRSError(
        f"--crs {crs_string(crs) if crs.to_epsg() else crs.name} is {kind}: cells are squares "
        f"in metres, so use a projected CRS in metres such as the AOI's UTM zone, "
        f"--crs {suggestion}"
    )


def _check_scale(where: Located, crs: pyproj.CRS) -> float:
    error = scale_error(where, crs)
    if error <= MAX_SCALE_ERROR:
        return error
    lon, lat = float(_wrap_lon(where.centre[0])), where.centre[1]
    if where.polar:  # centre the suggested CRS on the pole
        lon, lat = 0.0, 90.0 * where.polar
    raise GeometryError(
        f"AOI is too wide for one UTM/UPS zone ({crs.name}): cell sizes would be off by up to "
        f"{100 * error:.1f}% (limit {100 * MAX_SCALE_ERROR:.0f}%). Split the AOI, or pass a CRS "
        f"centred on it, e.g. --crs '+proj=tmerc +lon_0={lon:.2f} +lat_0={lat:.2f} "
        f"+datum=WGS84 +units=m' (or an equal-area one: '+proj=laea +lon_0={lon:.2f} "
        f"+lat_0={lat:.2f} +datum=WGS84 +units=m')"
    )


# -- selecting cells --------------------------------------------------------------------------


def _project_to_grid(aoi: AOI, where: Located, crs: pyproj.CRS) -> BaseGeometry:
    """The AOI in the grid CRS: a projected AOI straight from its own CRS (through lon/lat a
    ring around a pole would collapse), a lon/lat one with continuous longitudes."""
    if aoi.crs.equals(crs):
        return aoi.geometry
    if crs.equals(WEB_MERCATOR):
        return _to_web_mercator(where.lonlat or lonlat_geometry(aoi))
    if aoi.crs.is_projected:
        transformer = pyproj.Transformer.from_crs(aoi.crs, crs, always_xy=True)
        return _transform(shapely.segmentize(aoi.geometry, _SEGMENT_PROJECTED), transformer)
    transformer = pyproj.Transformer.from_crs(WGS84, crs, always_xy=True)
    return _transform(shapely.segmentize(where.lonlat, _SEGMENT_DEG), transformer)


def _to_web_mercator(lonlat: BaseGeometry) -> BaseGeometry:
    """Spherical mercator by its defining formula, without wrapping longitudes past 180°."""
    _, miny, _, maxy = lonlat.bounds
    if miny < -WEB_MERCATOR_MAX_LAT or maxy > WEB_MERCATOR_MAX_LAT:
        raise GeometryError(
            f"AOI reaches latitude {max(abs(miny), abs(maxy)):.2f}°, beyond web-mercator tiles "
            f"(±{WEB_MERCATOR_MAX_LAT:.2f}°): use --scheme metric"
        )
    a = WEB_MERCATOR_RADIUS

    def fn(xy: np.ndarray) -> np.ndarray:
        lon, lat = np.radians(xy[:, 0]), np.radians(xy[:, 1])
        return np.column_stack([a * lon, a * np.log(np.tan(np.pi / 4 + lat / 2))])

    return shapely.transform(shapely.segmentize(lonlat, _SEGMENT_DEG), fn)


def boundary_cells(aoi_grid: BaseGeometry, spec: GridSpec) -> np.ndarray:
    """Sorted unique ``(col, row)`` pairs (as int64 rows of a (n, 2) array) of every cell the
    AOI's outline may pass through: a superset, found without building any geometry.

    Each ring is densified to segments no longer than one cell, so a segment's cells lie in
    the 2 x 2 block spanned by its end points' cell indices.
    """
    rings = shapely.get_rings(shapely.get_parts(aoi_grid))
    coords, ring_of = shapely.get_coordinates(shapely.segmentize(rings, spec.cell_size),
                                              return_index=True)
    s, (x0, y0) = spec.cell_size, spec.origin
    u = (coords[:, 0] - x0) / s
    v = (y0 - coords[:, 1]) / s if spec.rows_down else (coords[:, 1] - y0) / s
    same_ring = ring_of[1:] == ring_of[:-1]
    eps = 1e-9  # a vertex a hair off a grid line must still flag the cells on both sides
    blocks = []
    for a, b in ((u[:-1], u[1:]), (v[:-1], v[1:])):
        lo = np.floor(np.minimum(a, b) - eps)[same_ring].astype(np.int64)
        hi = np.floor(np.maximum(a, b) + eps)[same_ring].astype(np.int64)
        blocks.append((lo, hi))
    (clo, chi), (rlo, rhi) = blocks
    pairs = [np.column_stack([clo + dc, rlo + dr]) for dc in range(3) for dr in range(3)]
    spans = [(clo + dc <= chi) & (rlo + dr <= rhi) for dc in range(3) for dr in range(3)]
    return np.unique(np.concatenate([p[m] for p, m in zip(pairs, spans, strict=True)]), axis=0)


def select_cells(
    aoi_grid: BaseGeometry, spec: GridSpec, min_overlap: float = 0.0, progress: Progress = SILENT
) -> tuple[np.ndarray, np.ndarray]:
    """(cols, rows) of every cell whose interior meets the AOI (and covers ``min_overlap`` of it).

    Only cells on the AOI's outline (:func:`boundary_cells`) need geometry: an exact interior
    test, or an intersection area for ``min_overlap``. Every other cell is wholly inside or
    wholly outside, which its centre decides (one vectorised point-in-polygon test). If
    ``min_overlap`` leaves nothing (an AOI smaller than a cell), the best-covered cell is kept.
    """
    c0, c1, r0, r1 = spec.index_range(aoi_grid.bounds)
    ncols = c1 - c0
    if ncols * (r1 - r0) > MAX_CANDIDATES:
        raise InputError(
            f"AOI would need up to {ncols * (r1 - r0):,} cells of {spec.cell_size:g} m: use a "
            "larger --cell-size (or a lower --zoom) or split the AOI"
        )
    shapely.prepare(aoi_grid)
    edge = boundary_cells(aoi_grid, spec)
    edge_keys = np.sort(edge[:, 1] * ncols + (edge[:, 0] - c0))  # row-major keys
    rows_all = list(spec.rows_north_to_south(r0, r1))
    step = max(1, BATCH_CELLS // ncols)
    kept_cols: list[np.ndarray] = []
    kept_rows: list[np.ndarray] = []
    best = (0.0, c0, rows_all[0])
    half = spec.cell_size / 2
    progress.start("grid", len(rows_all), f"{len(rows_all)} rows x {ncols} columns")
    for start in range(0, len(rows_all), step):
        batch_rows = np.asarray(rows_all[start:start + step])
        cols, rows = (a.ravel() for a in np.meshgrid(np.arange(c0, c1), batch_rows))
        keys = rows * ncols + (cols - c0)
        pos = np.minimum(np.searchsorted(edge_keys, keys), len(edge_keys) - 1)
        on_edge = edge_keys[pos] == keys
        minx, miny, _, _ = spec.bounds_of(cols, rows)
        keep = ~on_edge & shapely.contains_xy(aoi_grid, minx + half, miny + half)
        idx = np.flatnonzero(on_edge)
        if len(idx):
            boxes = spec.boxes(cols[idx], rows[idx])
            if min_overlap <= 0.0:
                keep[idx] = shapely.relate_pattern(aoi_grid, boxes, "T********")
            else:
                frac = shapely.area(shapely.intersection(aoi_grid, boxes)) / spec.cell_size**2
                keep[idx] = frac >= min_overlap
                i = int(np.argmax(frac))
                if frac[i] > best[0]:
                    best = (float(frac[i]), int(cols[idx[i]]), int(rows[idx[i]]))
        kept_cols.append(cols[keep])
        kept_rows.append(rows[keep])
        progress.advance(len(batch_rows))
    progress.finish()
    cols, rows = np.concatenate(kept_cols), np.concatenate(kept_rows)
    if len(cols) == 0 and best[0] > 0.0:
        cols, rows = np.array([best[1]]), np.array([best[2]])
    if len(cols) == 0:
        raise GeometryError("no cell overlaps the AOI: check that the AOI is a polygon with area")
    return cols.astype(np.int64), rows.astype(np.int64)


# -- public API -------------------------------------------------------------------------------


def make_grid(
    aoi: AOI,
    *,
    cell_size: float = 1000.0,
    crs: str | int | pyproj.CRS | None = None,
    scheme: str = "metric",
    zoom: int | None = None,
    min_overlap: float = 0.0,
    progress: Progress = SILENT,
) -> CellsFile:
    """Cells covering ``aoi``: a :class:`CellsFile` with ``grid`` metadata and an outline style."""
    if not 0.0 <= min_overlap <= 1.0:
        raise InputError(f"--min-overlap {min_overlap:g} must be a fraction between 0 and 1")
    if crs is not None:
        crs = parse_crs(crs, "--crs")
    where = locate(aoi)
    if scheme == "xyz":
        spec, ground = _xyz_spec(where, zoom, crs, progress)
        error = None
    elif scheme == "metric":
        spec, ground, error = _metric_spec(where, cell_size, crs, zoom, progress)
    else:
        raise InputError(f"unknown grid scheme '{scheme}': use 'metric' or 'xyz'")
    aoi_grid = _project_to_grid(aoi, where, spec.crs)
    cols, rows = select_cells(aoi_grid, spec, min_overlap, progress)
    if scheme == "xyz":
        cols = cols % (2**spec.zoom)  # tiles east of 180° are the world's first tiles again
    cells = gpd.GeoDataFrame(
        {"cell_id": spec.cell_ids(cols, rows), "row": rows, "col": cols},
        geometry=spec.boxes(cols, rows), crs=spec.crs,
    )
    metadata: dict[str, Any] = {"grid": {
        "scheme": scheme, "crs": crs_string(spec.crs), "cell_size_m": spec.cell_size,
        "zoom": spec.zoom, "ground_cell_size_m": round(ground, 2), "origin": list(spec.origin),
        "aoi_source": aoi.source, "aoi_layer": aoi.layer, "aoi_crs": crs_string(aoi.crs),
        "min_overlap": min_overlap, "n_cells": len(cells),
        "max_scale_error": None if error is None else round(error, 6),
        "urbangeo_version": urbangeo.__version__,
    }}
    return CellsFile(cells=cells, metadata=metadata, style_qml=outline_style())


def _metric_spec(
    where: Located, cell_size: float, crs: pyproj.CRS | None, zoom: int | None,
    progress: Progress,
) -> tuple[GridSpec, float, float | None]:
    if zoom is not None:
        raise InputError("--zoom only applies to --scheme xyz: drop it or add --scheme xyz")
    if not (isinstance(cell_size, (int, float)) and math.isfinite(cell_size) and cell_size > 0):
        raise InputError(f"--cell-size {cell_size} must be a positive number of metres")
    if crs is None:
        grid_crs = auto_crs(where)
        error: float | None = _check_scale(where, grid_crs)
        progress.info(f"grid CRS: {crs_string(grid_crs)} ({grid_crs.name}), chosen from the AOI "
                      f"centroid; scale error at most {100 * error:.2f}%")
    else:
        grid_crs = crs
        _check_user_crs(grid_crs, where)
        error = None
    lon, lat = where.centre
    try:
        k = pyproj.Proj(grid_crs).get_factors(float(_wrap_lon(lon)), lat).meridional_scale
        ground = cell_size / k if math.isfinite(k) and k > 0 else float(cell_size)
    except pyproj.exceptions.ProjError:
        ground = float(cell_size)
    return GridSpec("metric", grid_crs, float(cell_size), (0.0, 0.0)), ground, error


def _xyz_spec(
    where: Located, zoom: int | None, crs: pyproj.CRS | None, progress: Progress
) -> tuple[GridSpec, float]:
    if crs is not None:
        raise InputError("--crs does not apply to --scheme xyz (tiles are always EPSG:3857)")
    if zoom is None or not (0 <= zoom <= MAX_ZOOM):
        raise InputError(f"--scheme xyz needs --zoom between 0 and {MAX_ZOOM} "
                         "(zoom 15 gives ~1 km tiles at mid latitudes)")
    if where.pole:
        raise GeometryError("AOI encloses a pole, beyond web-mercator tiles (which stop at "
                            f"±{WEB_MERCATOR_MAX_LAT:.2f}°): use --scheme metric")
    tile = 2 * WEB_MERCATOR_HALF / 2**zoom
    lat = where.centre[1]
    ground = tile * math.cos(math.radians(lat))
    progress.info(f"grid: zoom {zoom} tiles are {tile:.1f} web-mercator m, {ground:.1f} m on the "
                  f"ground at latitude {lat:.2f}°")
    origin = (-WEB_MERCATOR_HALF, WEB_MERCATOR_HALF)
    return GridSpec("xyz", WEB_MERCATOR, tile, origin, zoom), ground


def build_grid(
    aoi: AOI | str | Path | None = None,
    *,
    bbox: str | None = None,
    bbox_crs: str = "EPSG:4326",
    layer: str | None = None,
    cell_size: float = 1000.0,
    crs: str | int | pyproj.CRS | None = None,
    scheme: str = "metric",
    zoom: int | None = None,
    min_overlap: float = 0.0,
    progress: Progress = SILENT,
) -> CellsFile:
    """Load the AOI (a vector file path, an :class:`AOI`, or ``bbox``) and grid it.

    The one entry point shared by ``urbangeo grid`` and Python users; write the result with
    :func:`urbangeo.geo.cells.write_cells`.
    """
    if (aoi is None) == (bbox is None):
        raise InputError("give exactly one AOI: a vector file or --bbox minx,miny,maxx,maxy")
    if bbox is not None:
        area = aoi_from_bbox(bbox, bbox_crs)
    elif isinstance(aoi, AOI):
        area = aoi
    else:
        area = load_aoi(aoi, layer=layer, progress=progress)
    return make_grid(area, cell_size=cell_size, crs=crs, scheme=scheme, zoom=zoom,
                     min_overlap=min_overlap, progress=progress)
