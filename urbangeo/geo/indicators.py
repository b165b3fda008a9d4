"""Indicator alignment: one raster value per cell, exact across coordinate systems.

Counts (population, emissions) are aggregated by area-weighted **sum** and densities by
area-weighted **mean**. Resampling a count raster onto the grid (nearest, bilinear) creates or
destroys people; instead each cell polygon is reprojected into the raster's CRS (edges densified
first wherever a straight edge would bow by more than a thousandth of a pixel) and exactextract
gives the exact fraction of every pixel the cell covers. A pixel's count is spread uniformly
over the pixel, so ``sum(value * covered_fraction)`` over non-overlapping cells preserves the
raster's total.

Nodata pixels are ignored. A cell with no valid pixel under it gets NaN, never 0: "no data" and
"nobody lives here" are different answers.

Where the raster's x wraps at the antimeridian (longitude, web mercator), a cell across 180°
is unwrapped into one piece (179.9..180.1) and extracted at both ends of the raster, the two
sums added: reprojected naively it would span the whole globe. A cell around a pole has no
such shape on a lon/lat raster and is refused.

Audits: the raster's total (or mean) inside the union of the cells, and inside the AOI the
grid was made for when the grid metadata names one that can still be read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from exactextract import exact_extract
from exactextract.feature import Feature, FeatureSource
from exactextract.raster import NumPyRasterSource, RasterSource
from pyproj import CRS, Transformer
from rasterio.windows import Window, from_bounds

from urbangeo.errors import CRSError, DataError, InputError, NoOverlapError, UrbangeoError
from urbangeo.geo.aoi import AOI, aoi_from_bbox, load_aoi
from urbangeo.geo.cells import CellsFile
from urbangeo.geo.crs import crs_string, wrap_period
from urbangeo.progress import SILENT, Progress

Stat = Literal["sum", "mean"]
STATS: tuple[Stat, ...] = ("sum", "mean")

# Columns other stages own; an indicator may not overwrite them (compared case-insensitively,
# as SQLite/GeoPackage column names are).
CORE_COLUMNS = frozenset({
    "fid", "cell_id", "row", "col", "geometry", "geom", "has_chip", "chip_valid_frac",
    "caption_raw", "caption", "caption_backend", "caption_prompt_hash",
})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Reprojected edges may bow at most this fraction of a pixel away from their true curve.
_BOW_TOLERANCE = 1e-3
_MAX_PIECES = 256  # per edge
_SAMPLE = 2000  # about this many geometries have their edges' bow measured
# Raster windows up to this many pixels are read into memory once (float64: 8 bytes each).
_MAX_WINDOW_PX = 16_000_000
# A cell whose valid pixels cover less than this fraction of it counts as partially covered.
_FULL_COVER = 0.999


@dataclass(frozen=True)
class IndicatorSpec:
    """One ``NAME=RASTER[:sum|mean]`` request: which raster, how to aggregate, which column."""

    name: str
    raster: Path
    stat: Stat = "sum"

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise InputError(
                f"indicator name '{self.name}' is not a usable column name: use letters, digits "
                "and '_' (not starting with a digit, at most 63 characters), e.g. pop=pop.tif:sum"
            )
        if self.name.lower() in CORE_COLUMNS:
            raise InputError(
                f"indicator name '{self.name}' is a column urbangeo already uses: pick another "
                "name, e.g. pop=pop.tif:sum"
            )
        if self.stat not in STATS:
            raise InputError(f"unknown statistic '{self.stat}' for indicator '{self.name}': "
                             "use :sum for counts or :mean for densities")
        if not Path(self.raster).is_file():
            raise InputError(f"indicator '{self.name}': raster {self.raster} does not exist; "
                             "check the path after '='")

    @classmethod
    def parse(cls, text: str) -> IndicatorSpec:
        """Parse ``NAME=RASTER[:sum|mean]`` (default ``sum``).

        Only a trailing ``:sum`` or ``:mean`` (any case) is read as the statistic, so paths with
        a ``:`` (``C:\\data\\pop.tif``) stay intact.
        """
        name, sep, rest = text.partition("=")
        name, rest = name.strip(), rest.strip()
        if not sep or not name or not rest:
            raise InputError(f"indicator '{text}' is not NAME=RASTER[:sum|mean], "
                             "e.g. --indicator pop=worldpop.tif:sum")
        stat: Stat = "sum"
        head, colon, tail = rest.rpartition(":")
        if colon and tail.lower() in STATS:
            rest, stat = head, tail.lower()  # type: ignore[assignment]
        elif colon and re.fullmatch(r"[A-Za-z]+", tail) and not Path(rest).exists():
            raise InputError(f"indicator '{text}': unknown statistic '{tail}'; "
                             "use :sum for counts or :mean for densities")
        return cls(name=name, raster=Path(rest), stat=stat)


@dataclass(frozen=True)
class IndicatorResult:
    """What one indicator did: coverage counts and an audit of totals."""

    name: str
    stat: Stat
    raster: str
    raster_crs: str
    units: str | None
    n_cells: int
    n_with_values: int
    n_partial: int
    cells_value: float
    raster_value_in_cells: float
    #: The raster's total (mean) inside the grid's AOI; None when the AOI could not be reread.
    raster_value_in_aoi: float | None = None

    @property
    def n_without_values(self) -> int:
        """Cells left NaN: outside the raster or over nodata only."""
        return self.n_cells - self.n_with_values

    def metadata(self) -> dict[str, Any]:
        """The entry of the ``indicators`` metadata section (JSON-able)."""
        audit = "total" if self.stat == "sum" else "mean"
        return {
            "raster": self.raster, "stat": self.stat, "raster_crs": self.raster_crs,
            "units": self.units, "band": 1, "n_cells_with_values": self.n_with_values,
            "n_cells_without_values": self.n_without_values,
            "n_cells_partial": self.n_partial,
            f"cells_{audit}": _json_float(self.cells_value),
            f"raster_{audit}_in_cells": _json_float(self.raster_value_in_cells),
            f"raster_{audit}_in_aoi": (None if self.raster_value_in_aoi is None
                                       else _json_float(self.raster_value_in_aoi)),
        }


@dataclass
class IndicatorReport:
    """One :class:`IndicatorResult` per indicator, in the order requested."""

    results: list[IndicatorResult] = field(default_factory=list)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class _RasterInfo:
    label: str  # "indicator 'pop': raster pop.tif", for messages
    crs: CRS
    units: str | None
    res: tuple[float, float]
    bounds: tuple[float, float, float, float]


def _raster_info(spec: IndicatorSpec, progress: Progress) -> _RasterInfo:
    """The raster's CRS, units, pixel size and extent; refuses CRS-less or rotated rasters."""
    try:
        with rasterio.open(spec.raster) as ds:
            crs, count, res, bounds, transform = ds.crs, ds.count, ds.res, ds.bounds, ds.transform
            units = (ds.units[0] if ds.units else None) or ds.tags().get("units") or None
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"indicator '{spec.name}': cannot read raster {spec.raster} ({exc}); "
                         "give a GeoTIFF/VRT that GDAL can open") from exc
    if crs is None:
        raise CRSError(f"indicator '{spec.name}': raster {spec.raster} has no CRS, so cells "
                       "cannot be placed on it; assign one (gdal_edit.py -a_srs EPSG:XXXX)")
    if transform.b or transform.d:
        raise InputError(f"indicator '{spec.name}': raster {spec.raster} is rotated; warp it "
                         "north-up first (gdalwarp)")
    if count > 1:
        progress.info(f"{spec.name}: {spec.raster} has {count} bands; using band 1")
    return _RasterInfo(f"indicator '{spec.name}': raster {spec.raster}",
                       CRS.from_user_input(crs), units, res, tuple(bounds))


def _segment_length(geoms: np.ndarray, transformer: Transformer, tol: float,
                    period: float | None) -> float | None:
    """Longest edge length that keeps reprojected edges within ``tol`` of their true curves.

    A reprojected straight edge bows away from the chord between its reprojected ends by about
    ``k * length**2``; measure that bow on a sample of edges (edge midpoint vs chord midpoint)
    and split edges into as many pieces as make it smaller than ``tol``. ``None``: no need.
    An edge across the antimeridian is measured unwrapped (x taken modulo ``period``).
    """
    sample = geoms[:: max(1, len(geoms) // _SAMPLE)]  # spread over the whole area
    rings = shapely.get_exterior_ring(shapely.get_parts(sample))
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[1:] == ring[:-1]
    a, b = coords[:-1][same], coords[1:][same]
    if not len(a):
        return None
    pts = np.concatenate([a, b, (a + b) / 2])
    x, y = transformer.transform(pts[:, 0], pts[:, 1])
    t = np.column_stack([x, y]).reshape(3, len(a), 2)
    if period is not None:
        t[1:, :, 0] -= period * np.round((t[1:, :, 0] - t[0, :, 0]) / period)
    bow = np.hypot(*(t[2] - (t[0] + t[1]) / 2).T)
    bow = bow[np.isfinite(bow)]
    pieces = math.ceil(math.sqrt(bow.max() / tol)) if bow.size else 1
    if pieces <= 1:
        return None
    return float(np.hypot(*(b - a).T).max()) / min(pieces, _MAX_PIECES)


def _to_raster_crs(geoms: np.ndarray, crs: CRS, raster: _RasterInfo) -> np.ndarray:
    """Geometries in the raster's CRS, edges densified as much as the raster's pixels need,
    each in one piece across the antimeridian (x may run past the raster's east edge)."""
    period = wrap_period(raster.crs)
    if crs != raster.crs:
        if raster.crs.is_geographic and crs.is_projected and _reaches_pole(geoms, crs):
            raise _pole_error(raster)
        transformer = Transformer.from_crs(crs, raster.crs, always_xy=True)
        step = _segment_length(geoms, transformer, _BOW_TOLERANCE * min(raster.res), period)
        if step is not None:
            geoms = shapely.segmentize(geoms, step)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(
            transformer.transform(xy[:, 0], xy[:, 1])))
    return geoms if period is None else _unwrap(geoms, period, raster)


def _unwrap(geoms: np.ndarray, period: float, raster: _RasterInfo) -> np.ndarray:
    """Shift the western vertices of geometries wider than half the world east by ``period``.

    Reprojection wraps x into one world, so a cell across 180° comes back with vertices at
    both ends (+179.9 and -179.9): moved together it is the small cell it is. A geometry still
    that wide encloses a pole, where a lon/lat polygon cannot describe it: refused.
    """
    bounds = shapely.bounds(geoms)
    wide = np.flatnonzero(bounds[:, 2] - bounds[:, 0] > period / 2)  # NaN: not wide
    if not len(wide):
        return geoms
    coords, which = shapely.get_coordinates(geoms[wide], return_index=True)
    middle = ((bounds[:, 0] + bounds[:, 2]) / 2)[wide][which]
    coords[:, 0] += np.where(coords[:, 0] < middle, period, 0.0)
    out = geoms.copy()
    out[wide] = shapely.set_coordinates(geoms[wide], coords)
    minx, _, maxx, _ = shapely.bounds(out[wide]).T
    if (maxx - minx > period / 2).any():
        raise _pole_error(raster)
    return out


def _reaches_pole(geoms: np.ndarray, crs: CRS) -> bool:
    """Whether a geometry (in a projected ``crs``) encloses or touches a pole: in lon/lat the
    pole is a whole line of latitude, which a reprojected vertex cannot become."""
    to_crs = Transformer.from_crs(CRS.from_epsg(4326), crs, always_xy=True)
    x, y = to_crs.transform([0.0, 0.0], [90.0, -90.0])
    poles = shapely.points(np.column_stack([x, y])[np.isfinite(x) & np.isfinite(y)])
    return any(shapely.intersects(geoms, pole).any() for pole in poles)


def _pole_error(raster: _RasterInfo) -> CRSError:
    return CRSError(
        f"{raster.label} is in {crs_string(raster.crs)}, where a polygon reaching a pole has "
        "no shape: warp the raster to the cells' CRS first (gdalwarp -t_srs <cells CRS> "
        "in.tif out.tif) or drop the polar cells"
    )


class _WkbFeature(Feature):
    """One polygon handed to exactextract as WKB (its GeoJSON path costs a json.dumps each)."""

    def __init__(self, index: int, wkb: bytes) -> None:
        super().__init__()
        self._index, self._wkb = index, wkb

    def geometry(self) -> bytes:
        return self._wkb

    def get(self, name: str) -> int:
        return self._index

    def set(self, name: str, value: Any) -> None:
        pass

    def fields(self) -> list[str]:
        return ["index"]


class _WkbSource(FeatureSource):
    def __init__(self, geoms: np.ndarray, crs: CRS) -> None:
        super().__init__()
        self._wkbs, self._wkt = shapely.to_wkb(geoms), crs.to_wkt()

    def count(self) -> int:
        return len(self._wkbs)

    def __iter__(self) -> Iterator[_WkbFeature]:
        for index, wkb in enumerate(self._wkbs):
            yield _WkbFeature(index, wkb)

    def srs_wkt(self) -> str:
        return self._wkt


def _pixels(spec: IndicatorSpec, raster: _RasterInfo, bounds: np.ndarray) -> RasterSource | str:
    """The raster window under ``bounds`` read once into memory (nodata, NaN and mask bands
    all become NaN, which exactextract skips; scale/offset applied), or the path when the
    window is huge and exactextract should stream it."""
    with rasterio.open(spec.raster) as ds:
        w = from_bounds(*bounds, transform=ds.transform)
        col0, row0 = math.floor(w.col_off) - 1, math.floor(w.row_off) - 1  # 1 pixel margin
        col1 = math.ceil(w.col_off + w.width) + 1
        row1 = math.ceil(w.row_off + w.height) + 1
        window = Window(col0, row0, col1 - col0, row1 - row0).intersection(
            Window(0, 0, ds.width, ds.height))
        if window.width * window.height > _MAX_WINDOW_PX:
            return str(spec.raster)
        masked = ds.read(1, window=window, masked=True).astype(np.float64)
        data = (masked * ds.scales[0] + ds.offsets[0]).filled(np.nan)  # NaN: ignored
        left, bottom, right, top = ds.window_bounds(window)
    return NumPyRasterSource(data, left, bottom, right, top, srs_wkt=raster.crs.to_wkt())


def _extract(pixels: RasterSource | str, geoms: np.ndarray, crs: CRS, ops: list[str],
             progress_cb: Any = False) -> dict[str, np.ndarray]:
    table = exact_extract(pixels, _WkbSource(geoms, crs), ops, include_cols=["index"],
                          output="pandas", progress=progress_cb)
    table = table.sort_values("index")
    return {col: table[col].to_numpy(dtype=np.float64) for col in table.columns}


def _ops(stat: Stat, geographic: bool) -> list[str]:
    """exactextract operations that add up across the pieces of a geometry: ``value`` (sum of
    value x weight), ``cover`` (valid pixels covered, in pixels) and, for a mean in a
    geographic CRS, ``weight`` (true area of the valid pixels covered). mean = value / weight.
    """
    if stat == "mean" and geographic:  # degree pixels shrink towards the poles
        return ["value=sum(coverage_weight=area_spherical_m2)",
                "weight=count(coverage_weight=area_spherical_m2)", "cover=count"]
    return ["value=sum", "cover=count"]


def _overlaps(geoms: np.ndarray, raster: _RasterInfo) -> list[tuple[float, np.ndarray]]:
    """``(x shift, indices)`` for each copy of the world where geometries meet the raster:
    just ``0`` unless the raster's x wraps, then also one world west and one east."""
    period = wrap_period(raster.crs)
    b = shapely.bounds(geoms)
    finite = np.isfinite(b).all(axis=1)  # outside the raster CRS's valid area: never met
    west, south, east, north = raster.bounds
    out = []
    for shift in (0.0,) if period is None else (0.0, -period, period):
        hit = finite & (b[:, 0] + shift < east) & (b[:, 2] + shift > west) & (b[:, 1] < north) \
            & (b[:, 3] > south)
        if hit.any():
            out.append((shift, np.flatnonzero(hit)))
    return out


def _zonal(spec: IndicatorSpec, raster: _RasterInfo, geoms: np.ndarray, stat: Stat,
           progress: Progress = SILENT, stage: str = "") -> dict[str, np.ndarray]:
    """The :func:`_ops` sums for each geometry (in the raster's CRS), added up over every copy
    of the world where it meets the raster (0 where it meets none)."""
    ops = _ops(stat, raster.crs.is_geographic)
    totals = {op.partition("=")[0]: np.zeros(len(geoms)) for op in ops}
    pieces = _overlaps(geoms, raster)
    todo = sum(len(idx) for _, idx in pieces)
    done = 0
    progress.start(stage, todo)
    for shift, idx in pieces:
        part = geoms[idx] if shift == 0.0 else shapely.transform(
            geoms[idx], lambda xy, dx=shift: xy + (dx, 0.0))
        base = done

        def report(fraction: float, _message: str = "", base: int = base, n: int = len(idx)
                   ) -> None:
            nonlocal done
            now = base + int(fraction * n)
            if now > done:
                progress.advance(now - done)
                done = now

        pixels = _pixels(spec, raster, shapely.total_bounds(part))
        stats = _extract(pixels, part, raster.crs, ops, report)
        report(1.0)  # whatever exactextract last reported, these geometries are done
        for name, total in totals.items():
            total[idx] += np.nan_to_num(stats[name])
    progress.finish()
    return totals


def _aggregate(stats: dict[str, np.ndarray], stat: Stat) -> np.ndarray:
    """The value per geometry: the sum, or value / weight; NaN without valid pixels."""
    cover = stats["cover"]
    weight = stats.get("weight", cover)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = stats["value"] if stat == "sum" else stats["value"] / weight
    return np.where(cover > 0, values, np.nan)


def _value_in(spec: IndicatorSpec, raster: _RasterInfo, geom: shapely.Geometry, crs: CRS,
              what: str, progress: Progress) -> float | None:
    """The raster's total (mean) inside one polygon given in ``crs``, for the audits; None
    (said through ``progress``) when the polygon cannot be placed on the raster."""
    try:
        geoms = _to_raster_crs(np.array([geom]), crs, raster)
    except UrbangeoError as exc:
        progress.info(f"{spec.name}: no total inside {what} ({exc})")
        return None
    return float(_aggregate(_zonal(spec, raster, geoms, spec.stat), spec.stat)[0])


def _cells_union(cells: np.ndarray) -> np.ndarray:
    union = shapely.coverage_union_all(cells)
    if not shapely.is_valid(union):  # cells overlap: not a coverage, take the general union
        union = shapely.union_all(cells)
    return np.array([union])


def _one_indicator(cells: gpd.GeoSeries, spec: IndicatorSpec, aoi: AOI | None,
                   progress: Progress) -> tuple[np.ndarray, IndicatorResult]:
    raster = _raster_info(spec, progress)
    cells_crs = CRS.from_user_input(cells.crs)
    cell_geoms = cells.to_numpy()
    geoms = _to_raster_crs(cell_geoms, cells_crs, raster)
    if not _overlaps(geoms, raster):
        raise NoOverlapError(
            f"indicator '{spec.name}': raster {spec.raster} does not overlap the cells; "
            "check that the raster covers your area of interest"
        )
    stats = _zonal(spec, raster, geoms, spec.stat, progress, f"indicator {spec.name}")
    values = _aggregate(stats, spec.stat)
    if np.isnan(values).all():
        raise DataError(f"indicator '{spec.name}': raster {spec.raster} holds only nodata under "
                        "the cells; check its nodata value or use another raster")
    cell_pixels = shapely.area(geoms) / (raster.res[0] * raster.res[1])
    cover = stats["cover"]
    partial = (cover > 0) & (cover < _FULL_COVER * cell_pixels)
    has = ~np.isnan(values)
    if spec.stat == "sum":
        cells_value = float(values[has].sum())
    else:  # weights: true area of the valid pixels in a geographic CRS, else pixel cover
        cells_value = float(np.average(values[has], weights=stats.get("weight", cover)[has]))
    in_cells = _value_in(spec, raster, _cells_union(cell_geoms)[0], cells_crs,
                         "the cells' union", progress)
    in_aoi = None if aoi is None else _value_in(spec, raster, aoi.geometry,
                                                CRS.from_user_input(aoi.crs), "the AOI", progress)
    result = IndicatorResult(
        name=spec.name, stat=spec.stat, raster=str(Path(spec.raster).resolve()),
        raster_crs=crs_string(raster.crs), units=raster.units, n_cells=len(cells),
        n_with_values=int(has.sum()), n_partial=int(partial.sum()), cells_value=cells_value,
        raster_value_in_cells=math.nan if in_cells is None else in_cells,
        raster_value_in_aoi=in_aoi,
    )
    return values, result


def _grid_aoi(metadata: dict[str, Any], progress: Progress) -> AOI | None:
    """The AOI the cells were made for, reread from the ``grid`` metadata (a bbox, or a vector
    file that still exists), so the raster's total inside it can be reported; else None."""
    grid = metadata.get("grid") or {}
    source = grid.get("aoi_source")
    if not isinstance(source, str):
        return None
    try:
        if source.startswith("bbox:"):
            return aoi_from_bbox(source.removeprefix("bbox:"), grid.get("aoi_crs") or "EPSG:4326")
        if Path(source).is_file():
            return load_aoi(source, layer=grid.get("aoi_layer"))
        progress.info(f"indicators: AOI file {source} is gone; totals inside it are not reported")
    except UrbangeoError as exc:
        progress.info(f"indicators: cannot reread AOI {source} ({exc}); totals inside it are not "
                      "reported")
    return None


def add_indicators(cells_file: CellsFile, specs: list[IndicatorSpec], *,
                   progress: Progress = SILENT) -> tuple[CellsFile, IndicatorReport]:
    """Return a copy of ``cells_file`` with one float column per spec, and what happened.

    Re-running an indicator replaces its column; columns that are not indicators are never
    overwritten. Raises :class:`NoOverlapError` when a raster misses the cells entirely,
    :class:`CRSError` when cells or raster lack a CRS.
    """
    cells = cells_file.cells
    if cells.crs is None:
        raise CRSError("cells have no CRS; remake them with `urbangeo grid`")
    if cells.empty:
        raise InputError("the cells file has no cells; make cells with `urbangeo grid` first")
    names = [spec.name for spec in specs]
    if len({n.lower() for n in names}) != len(names):
        raise InputError(f"indicator names repeat ({', '.join(names)}): give each a unique name")
    known = dict(cells_file.metadata.get("indicators", {}))
    existing = {c.lower(): c for c in cells.columns}
    for name in names:
        clash = existing.get(name.lower())
        if clash is not None and clash not in known:
            raise InputError(f"cells already have a column '{clash}' that is not an indicator: "
                             f"choose another name than '{name}'")
    out = cells.copy()
    report = IndicatorReport()
    aoi = _grid_aoi(cells_file.metadata, progress)
    for spec in specs:
        stale = existing.get(spec.name.lower())
        if stale is not None:  # re-run, possibly with different capitalisation
            out = out.drop(columns=stale)
            known.pop(stale, None)
        values, result = _one_indicator(cells.geometry, spec, aoi, progress)
        out[spec.name] = values
        known[spec.name] = result.metadata()
        report.results.append(result)
    metadata = {**cells_file.metadata, "indicators": known}
    return replace(cells_file, cells=out, metadata=metadata), report
