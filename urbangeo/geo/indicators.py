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

from urbangeo.errors import CRSError, DataError, InputError, NoOverlapError
from urbangeo.geo.cells import CellsFile
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
        }


@dataclass
class IndicatorReport:
    """One :class:`IndicatorResult` per indicator, in the order requested."""

    results: list[IndicatorResult] = field(default_factory=list)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


@dataclass(frozen=True)
class _RasterInfo:
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
    return _RasterInfo(CRS.from_user_input(crs), units, res, tuple(bounds))


def _segment_length(geoms: np.ndarray, transformer: Transformer, tol: float) -> float | None:
    """Longest edge length that keeps reprojected edges within ``tol`` of their true curves.

    A reprojected straight edge bows away from the chord between its reprojected ends by about
    ``k * length**2``; measure that bow on a sample of edges (edge midpoint vs chord midpoint)
    and split edges into as many pieces as make it smaller than ``tol``. ``None``: no need.
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
    bow = np.hypot(*(t[2] - (t[0] + t[1]) / 2).T)
    bow = bow[np.isfinite(bow)]
    pieces = math.ceil(math.sqrt(bow.max() / tol)) if bow.size else 1
    if pieces <= 1:
        return None
    return float(np.hypot(*(b - a).T).max()) / min(pieces, _MAX_PIECES)


def _to_raster_crs(geoms: np.ndarray, crs: CRS, raster: _RasterInfo) -> np.ndarray:
    """Geometries in the raster's CRS, edges densified as much as the raster's pixels need."""
    if crs == raster.crs:
        return geoms
    transformer = Transformer.from_crs(crs, raster.crs, always_xy=True)
    step = _segment_length(geoms, transformer, _BOW_TOLERANCE * min(raster.res))
    if step is not None:
        geoms = shapely.segmentize(geoms, step)
    return shapely.transform(geoms, lambda xy: np.column_stack(
        transformer.transform(xy[:, 0], xy[:, 1])))


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


def _value_op(stat: Stat, geographic: bool) -> str:
    # In a geographic CRS pixels shrink towards the poles: weight the mean by true pixel area.
    if stat == "mean" and geographic:
        return "mean(coverage_weight=area_spherical_m2)"
    return stat


def _cells_union(cells: np.ndarray) -> np.ndarray:
    union = shapely.coverage_union_all(cells)
    if not shapely.is_valid(union):  # cells overlap: not a coverage, take the general union
        union = shapely.union_all(cells)
    return np.array([union])


def _one_indicator(cells: gpd.GeoSeries, spec: IndicatorSpec, progress: Progress
                   ) -> tuple[np.ndarray, IndicatorResult]:
    raster = _raster_info(spec, progress)
    cells_crs = CRS.from_user_input(cells.crs)
    cell_geoms = cells.to_numpy()
    geoms = _to_raster_crs(cell_geoms, cells_crs, raster)
    finite = np.isfinite(shapely.bounds(geoms)).all(axis=1)  # outside the CRS's valid area
    if not finite.any() or not shapely.intersects(shapely.box(*raster.bounds),
                                                  shapely.box(*shapely.total_bounds(geoms[finite]))):
        raise NoOverlapError(
            f"indicator '{spec.name}': raster {spec.raster} does not overlap the cells; "
            "check that the raster covers your area of interest"
        )
    pixels = _pixels(spec, raster, shapely.total_bounds(geoms[finite]))
    value_op = _value_op(spec.stat, raster.crs.is_geographic)
    todo = int(finite.sum())
    done = 0
    progress.start(f"indicator {spec.name}", todo)

    def report(fraction: float, _message: str = "") -> None:
        nonlocal done
        now = int(fraction * todo)
        if now > done:
            progress.advance(now - done)
            done = now

    stats = _extract(pixels, geoms[finite], raster.crs, [value_op, "count"], report)
    progress.finish()
    values = np.full(len(cells), np.nan)
    valid_cover = np.zeros(len(cells))
    values[finite] = stats[spec.stat]
    valid_cover[finite] = stats["count"]  # sum of covered fractions of valid pixels
    values[valid_cover <= 0] = np.nan
    if np.isnan(values).all():
        raise DataError(f"indicator '{spec.name}': raster {spec.raster} holds only nodata under "
                        "the cells; check its nodata value or use another raster")
    cell_pixels = shapely.area(geoms) / (raster.res[0] * raster.res[1])
    partial = (valid_cover > 0) & (valid_cover < _FULL_COVER * cell_pixels)

    union = _to_raster_crs(_cells_union(cell_geoms), cells_crs, raster)
    in_union = float(_extract(pixels, union, raster.crs, [value_op])[spec.stat][0])
    has = ~np.isnan(values)
    if spec.stat == "sum":
        cells_value = float(values[has].sum())
    else:
        weights = valid_cover[has]
        if raster.crs.is_geographic:  # a degree pixel's true area shrinks with cos(latitude)
            lat = shapely.get_y(shapely.centroid(geoms[has]))
            weights = weights * np.cos(np.radians(lat))
        cells_value = float(np.average(values[has], weights=weights))
    result = IndicatorResult(
        name=spec.name, stat=spec.stat, raster=str(Path(spec.raster).resolve()),
        raster_crs=_crs_label(raster.crs), units=raster.units, n_cells=len(cells),
        n_with_values=int(has.sum()), n_partial=int(partial.sum()), cells_value=cells_value,
        raster_value_in_cells=in_union,
    )
    return values, result


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
    for spec in specs:
        stale = existing.get(spec.name.lower())
        if stale is not None:  # re-run, possibly with different capitalisation
            out = out.drop(columns=stale)
            known.pop(stale, None)
        values, result = _one_indicator(cells.geometry, spec, progress)
        out[spec.name] = values
        known[spec.name] = result.metadata()
        report.results.append(result)
    metadata = {**cells_file.metadata, "indicators": known}
    return replace(cells_file, cells=out, metadata=metadata), report
