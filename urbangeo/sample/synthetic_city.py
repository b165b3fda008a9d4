"""A procedural, entirely SYNTHETIC city: the bundled sample behind ``urbangeo demo``.

Real imagery and census rasters cannot ship with the package (size, licences), yet a fresh
clone must run the whole pipeline offline. So we draw a plausible city from a seed: a street
grid with arterials, diagonals and a ring road, a river and a lake, a dense downtown, residential
and suburban blocks, an industrial sector, parks and farmland. Everything is vectorised numpy
(a 6 km city renders in a few seconds) and deterministic: the same seed gives the same bytes.

Outputs (every file is tagged ``SYNTHETIC=yes``; nothing here depicts a real place):
- ``imagery.tif``: red, green, blue, NIR uint8 at 1000/256 m (a 1 km cell is a 256 px chip),
  UTM 33N; vegetation is bright in NIR, water dark, buildings cast shadows.
- ``landuse.tif``: the class of every imagery pixel (:data:`CLASSES`), the ground truth.
- ``population.tif`` (people, EPSG:4326 at 3 arc-seconds, like WorldPop), ``gdp.tif``
  (million currency units / year, EPSG:3035 at 100 m) and ``carbon.tif`` (t CO2 / year,
  EPSG:3035 at 250 m): counts per pixel that follow land use and building height plus noise, on
  grids deliberately unlike the imagery's, so indicator alignment is exercised. Each is the
  exact re-binning of one fine count map, so totals are known and preserved.
- ``aoi.geojson``: the city outline (EPSG:4326), inset a little so a 1 km grid has 36 cells.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from pyproj import Transformer
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin

from urbangeo._atomic import atomic_path
from urbangeo.errors import InputError
from urbangeo.progress import SILENT, Progress

CRS = "EPSG:32633"
# North-west corner (UTM 33N, ~47.4 N 15 E): on a 1000 m multiple, so 1 km grids align with it.
ORIGIN = (500_000.0, 5_252_000.0)
PIXEL_M = 1000 / 256
NODATA = float(np.finfo(np.float32).min)
WATER, PARK, DOWNTOWN, RESIDENTIAL, SUBURB, INDUSTRIAL, ROAD, FARMLAND = range(8)
CLASSES = ("water", "park", "downtown", "residential", "suburb", "industrial", "road", "farmland")
INDICATORS = {  # name: (file, stat, units, CRS, pixel size in CRS units)
    "population": ("population.tif", "sum", "people", "EPSG:4326", 1 / 1200),
    "gdp": ("gdp.tif", "sum", "million currency units/yr", "EPSG:3035", 100.0),
    "carbon": ("carbon.tif", "sum", "t CO2/yr", "EPSG:3035", 250.0),
}
_TAGS = {"SYNTHETIC": "yes", "GENERATOR": "urbangeo.sample.synthetic_city"}

_BLOCK_M, _STREET_M, _ARTERIAL_M = 128.0, 10.0, 18.0
_BUILT = (DOWNTOWN, RESIDENTIAL, SUBURB, INDUSTRIAL)
# per built zone: lots per block side, inset range (m), presence probability, floors range
_LOTS = {DOWNTOWN: (2, 3, 9, 0.92, 4, 20), RESIDENTIAL: (3, 4, 9, 0.9, 2, 5),
         SUBURB: (3, 9, 14, 0.85, 1, 2), INDUSTRIAL: (1, 6, 25, 0.95, 1, 3)}
_ROOFS = {
    DOWNTOWN: [(120, 120, 125), (165, 163, 160), (92, 96, 104), (182, 176, 166), (72, 78, 88)],
    RESIDENTIAL: [(152, 82, 62), (172, 98, 72), (122, 112, 102), (138, 64, 52), (104, 102, 108)],
    SUBURB: [(178, 92, 66), (150, 78, 58), (112, 86, 72), (132, 130, 128), (160, 110, 80)],
    INDUSTRIAL: [(204, 204, 204), (172, 178, 184), (142, 152, 164), (212, 206, 196)],
}
_GROUND = {WATER: (36, 68, 90), PARK: (88, 132, 60), DOWNTOWN: (142, 139, 131),
           RESIDENTIAL: (102, 124, 72), SUBURB: (106, 140, 70), INDUSTRIAL: (118, 116, 110),
           ROAD: (86, 86, 90), FARMLAND: (140, 150, 90)}
# NIR as real 4-band imagery shows it: water absorbs NIR; grass reflects it two to three times
# more than red (NDVI 0.3-0.5); asphalt, concrete and bare soil are spectrally flat, their NIR
# a little above their visible level (NDWI <= 0), so they never pass for water.
_GROUND_NIR = {WATER: 12, PARK: 205, DOWNTOWN: 150, RESIDENTIAL: 190, SUBURB: 200,
               INDUSTRIAL: 125, ROAD: 95, FARMLAND: 170}
_ARTERIAL_RGB, _ARTERIAL_NIR = (70, 71, 75), 80  # fresher, darker asphalt
_UNDERSTORY_RGB, _UNDERSTORY_NIR = (74, 104, 52), 185
_SIDEWALK_RGB, _SIDEWALK_NIR = (158, 155, 148), 165
_MARKING_RGB, _MARKING_NIR = (206, 204, 190), 215
_TREE_PROB = {PARK: 0.55, SUBURB: 0.3, RESIDENTIAL: 0.18, DOWNTOWN: 0.03, INDUSTRIAL: 0.04,
              FARMLAND: 0.05}
# per building pixel: people per floor, t CO2 per floor, GDP per floor (by zone)
_PER_FLOOR = {DOWNTOWN: (0.12, 0.06, 0.004), RESIDENTIAL: (0.35, 0.03, 0.0006),
              SUBURB: (0.32, 0.03, 0.0003), INDUSTRIAL: (0.002, 0.9, 0.002)}


@dataclass(frozen=True)
class SampleCity:
    """Paths of one generated synthetic city (all inside ``out_dir``)."""

    out_dir: Path
    imagery: Path
    landuse: Path
    population: Path
    gdp: Path
    carbon: Path
    aoi: Path
    seed: int

    @property
    def indicator_specs(self) -> list[str]:
        """``NAME=RASTER:STAT`` strings for ``--indicator`` / ``IndicatorSpec.parse``."""
        return [f"{name}={self.out_dir / file}:{stat}"
                for name, (file, stat, *_rest) in INDICATORS.items()]


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features about ``cell_px`` pixels wide (smoothstep bilinear)."""
    h, w = shape
    grid = rng.random((int(h / cell_px) + 2, int(w / cell_px) + 2))
    y, x = np.arange(h) / cell_px, np.arange(w) / cell_px
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


@dataclass
class _Layout:
    """Per-pixel land use plus what rendering and indicators need."""

    landuse: np.ndarray     # uint8 class per pixel
    building: np.ndarray    # bool
    floors: np.ndarray      # float32, 0 off buildings
    roof: np.ndarray        # float32 (h, w, 3) roof colour
    gable: np.ndarray       # float32 shading factor on roofs
    arterial: np.ndarray    # bool: wide roads (more traffic)
    sidewalk: np.ndarray    # bool
    centre_line: np.ndarray  # bool: dashed markings on arterials
    block_noise: np.ndarray  # float32 lognormal factor per pixel's block


@dataclass
class _Frame:
    """Pixel coordinates shared by every layout step (metres from the north-west corner)."""

    size_m: float
    xx: np.ndarray
    yy: np.ndarray
    cx: float
    cy: float
    bi: np.ndarray  # block column / row of each pixel
    bj: np.ndarray
    u: np.ndarray   # metres into the block from its west / north edge
    v: np.ndarray

    @property
    def dx(self) -> np.ndarray:
        return self.xx - self.cx

    @property
    def dy(self) -> np.ndarray:
        return self.yy - self.cy

    @property
    def radius(self) -> np.ndarray:
        return np.hypot(self.dx, self.dy)


def _frame(rng: np.random.Generator, size_m: float, n: int) -> _Frame:
    coords = ((np.arange(n) + 0.5) * PIXEL_M).astype(np.float32)
    xx, yy = np.meshgrid(coords, coords)
    cx, cy = size_m * (0.5 + rng.uniform(-0.04, 0.04, 2))
    bi, bj = (xx // _BLOCK_M).astype(np.int32), (yy // _BLOCK_M).astype(np.int32)
    return _Frame(size_m, xx, yy, cx, cy, bi, bj, xx - bi * _BLOCK_M, yy - bj * _BLOCK_M)


def _zones(rng: np.random.Generator, f: _Frame) -> np.ndarray:
    """Land use per pixel, decided per 128 m block at its centre (so blocks are uniform):
    rings from downtown out to farmland, warped by noise, an industrial sector and parks."""
    n = f.xx.shape[0]
    r_eff = f.radius * (0.8 + 0.4 * _value_noise(rng, (n, n), 1000 / PIXEL_M))
    r_down, r_res, r_farm = (k * f.size_m for k in (0.12, 0.3, 0.55))
    nb = int(f.bi.max()) + 1
    centres = ((np.arange(nb) + 0.5) * _BLOCK_M / PIXEL_M).astype(int).clip(0, n - 1)
    rb = r_eff[np.ix_(centres, centres)]
    zone = np.select([rb < r_down, rb < r_res, rb < r_farm], [DOWNTOWN, RESIDENTIAL, SUBURB],
                     FARMLAND).astype(np.uint8)
    angle = np.arctan2(-f.dy, f.dx)[np.ix_(centres, centres)]
    ind_angle = rng.uniform(-np.pi, np.pi)
    sector = np.abs(np.angle(np.exp(1j * (angle - ind_angle)))) < 0.38
    zone[sector & (rb > 0.9 * r_res) & (rb < 0.9 * r_farm)] = INDUSTRIAL
    zone[(rng.random((nb, nb)) < 0.07) & np.isin(zone, (RESIDENTIAL, SUBURB))] = PARK
    park_a = ind_angle + np.pi + rng.uniform(-0.6, 0.6)  # central park, away from industry
    px, py = f.cx + 1.3 * r_down * np.cos(park_a), f.cy - 1.3 * r_down * np.sin(park_a)
    bc = (np.arange(nb) + 0.5) * _BLOCK_M
    zone[(np.abs(bc[:, None] - py) < 200) & (np.abs(bc[None, :] - px) < 260)] = PARK
    return zone[f.bj, f.bi]


def _streets(rng: np.random.Generator, f: _Frame, farm: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local streets (none on farmland), arterials (every 4th grid line, two diagonals through
    the centre, a ring road) and the dashed centre lines of grid arterials."""
    local = ((f.u < _STREET_M) | (f.v < _STREET_M)) & ~farm
    grid_art = ((f.bi % 4 == 0) & (f.u < _ARTERIAL_M)) | ((f.bj % 4 == 0) & (f.v < _ARTERIAL_M))
    diag_a = rng.uniform(0.3, 0.7)
    diagonal = np.zeros_like(local)
    for a in (diag_a, diag_a + np.pi / 2 + rng.uniform(-0.3, 0.3)):
        diagonal |= np.abs(f.dx * np.sin(a) + f.dy * np.cos(a)) < _ARTERIAL_M / 2
    ring = np.abs(f.radius - 0.38 * f.size_m) < _ARTERIAL_M / 2 + 2
    mid = _ARTERIAL_M / 2
    centre_line = ((f.bi % 4 == 0) & (np.abs(f.u - mid) < 0.8) & (f.yy % 12 < 6)) | \
        ((f.bj % 4 == 0) & (np.abs(f.v - mid) < 0.8) & (f.xx % 12 < 6))
    return local, grid_art | diagonal | ring, centre_line


def _water(rng: np.random.Generator, f: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """A meandering river (35 m perpendicular half-width) plus a lake; and the river distance."""
    size_m = f.size_m
    side = rng.choice([-1, 1])
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    k1, k2 = 2 * np.pi / (1.5 * size_m), 2 * np.pi / (0.4 * size_m)
    a1, a2 = 0.15 * size_m, 0.04 * size_m
    xx = f.xx
    river_y = f.cy + side * 0.17 * size_m + a1 * np.sin(k1 * xx + p1) + a2 * np.sin(k2 * xx + p2)
    slope = a1 * k1 * np.cos(k1 * xx + p1) + a2 * k2 * np.cos(k2 * xx + p2)
    river_d = np.abs(f.yy - river_y) / np.sqrt(1 + slope**2)
    lake_a = rng.uniform(-np.pi, np.pi)
    lx, ly = f.cx + 0.36 * size_m * np.cos(lake_a), f.cy - 0.36 * size_m * np.sin(lake_a)
    lake = ((xx - lx) / 260) ** 2 + ((f.yy - ly) / 170) ** 2 < 1
    return (river_d < 35) | lake, river_d


def _buildings(rng: np.random.Generator, f: _Frame, landuse: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Footprints, floors, roof colours and roof shading: each block of a built zone is split
    into k x k lots and each lot draws its own footprint, height and roof from a table."""
    n = landuse.shape[0]
    nb = int(f.bi.max()) + 1
    table = rng.random((nb, nb, 4, 4, 7)).astype(np.float32)
    building = np.zeros((n, n), bool)
    floors = np.zeros((n, n), np.float32)
    roof = np.zeros((n, n, 3), np.float32)
    gable = np.ones((n, n), np.float32)
    for z, (k, lo, hi, present, f_lo, f_hi) in _LOTS.items():
        mask = landuse == z
        lot = (_BLOCK_M - _STREET_M) / k
        lu_ = np.clip(f.u[mask] - _STREET_M, 0, None)
        lv_ = np.clip(f.v[mask] - _STREET_M, 0, None)
        li = np.minimum((lu_ // lot).astype(int), k - 1)
        lj = np.minimum((lv_ // lot).astype(int), k - 1)
        a, b = lu_ - li * lot, lv_ - lj * lot
        r = table[f.bj[mask], f.bi[mask], lj, li]
        left, right, top, bottom = (lo + (hi - lo) * r[:, i] for i in range(4))
        inside = (a > left) & (a < lot - right) & (b > top) & (b < lot - bottom) & \
            (r[:, 4] < present)
        building[mask] = inside
        floors[mask] = np.where(inside, np.round(f_lo + (f_hi - f_lo) * r[:, 5] ** 2), 0)
        palette = np.array(_ROOFS[z], np.float32)
        tint = 0.9 + 0.2 * r[:, 6:7]
        roof[mask] = palette[(r[:, 6] * len(palette)).astype(int) % len(palette)] * tint
        if z in (RESIDENTIAL, SUBURB):  # gabled roofs: the sunlit half is brighter
            wide = (lot - right - left) > (lot - bottom - top)
            first_half = np.where(wide, b - top < (lot - bottom - top) / 2,
                                  a - left < (lot - right - left) / 2)
            gable[mask] = np.where(first_half, 1.1, 0.86)
        else:  # flat roofs: a bright parapet along the edge
            edge = np.minimum.reduce([a - left, lot - right - a, b - top, lot - bottom - b])
            gable[mask] = np.where(edge < 1.5 * PIXEL_M, 1.15, 1.0)
    return building, floors, roof, gable


def _layout(rng: np.random.Generator, size_m: float, n: int) -> _Layout:
    """Zones, streets, water and buildings of the city on an ``n`` x ``n`` pixel grid."""
    f = _frame(rng, size_m, n)
    landuse = _zones(rng, f)
    local, arterial, centre_line = _streets(rng, f, landuse == FARMLAND)
    water, river_d = _water(rng, f)
    greenway = (river_d < 80) & ~water & np.isin(landuse, (RESIDENTIAL, SUBURB, PARK, DOWNTOWN))
    landuse[greenway] = PARK
    road = (local & ~water) | arterial  # arterials bridge the water, local streets stop
    landuse[water & ~arterial] = WATER
    landuse[road] = ROAD
    sidewalk = ((f.u < _STREET_M + 3) | (f.v < _STREET_M + 3)) & ~road & \
        np.isin(landuse, (DOWNTOWN, RESIDENTIAL, INDUSTRIAL))
    building, floors, roof, gable = _buildings(rng, f, landuse)
    nb = int(f.bi.max()) + 1
    block_noise = rng.lognormal(0, 0.35, (nb, nb)).astype(np.float32)[f.bj, f.bi]
    return _Layout(landuse, building, floors, roof, gable, arterial, sidewalk, centre_line,
                   block_noise)


def _render(rng: np.random.Generator, lay: _Layout) -> np.ndarray:
    """RGB + NIR (4, n, n) uint8 seen from above: textures, tree canopy, shadows."""
    n = lay.landuse.shape[0]
    lu = lay.landuse
    ground = np.array([_GROUND[c] for c in range(len(CLASSES))], np.float32)
    rgb = ground[lu]
    nir = np.array([_GROUND_NIR[c] for c in range(len(CLASSES))], np.float32)[lu]

    # Farmland: fields of different crops with row texture.
    coords = (np.arange(n) + 0.5) * PIXEL_M
    fi, fj = (coords[None, :] // 160).astype(int), (coords[:, None] // 290).astype(int)
    crops = np.array([(146, 156, 86), (120, 148, 70), (176, 162, 112), (150, 128, 92),
                      (104, 138, 64)], np.float32)
    crop_nir = np.array([190, 205, 185, 160, 210], np.float32)  # 3rd, 4th: fallow soil
    field = (fi * 7 + fj * 13 + rng.integers(0, 5)) % len(crops)
    farm = lu == FARMLAND
    rows = 1 + 0.06 * np.sin(coords[None, :] * 2 * np.pi / 9)
    rgb[farm] = (crops[field] * rows[..., None])[farm]
    nir[farm] = crop_nir[field][farm]

    lawn = _value_noise(rng, (n, n), 24)[..., None]
    garden = np.isin(lu, (RESIDENTIAL, SUBURB, PARK))
    rgb[garden] *= (0.85 + 0.3 * lawn)[garden]
    rgb[lay.sidewalk], nir[lay.sidewalk] = _SIDEWALK_RGB, _SIDEWALK_NIR
    asphalt = lay.arterial & (lu == ROAD)
    rgb[asphalt], nir[asphalt] = _ARTERIAL_RGB, _ARTERIAL_NIR
    rgb[lay.centre_line], nir[lay.centre_line] = _MARKING_RGB, _MARKING_NIR
    rgb[lay.building] = (lay.roof * lay.gable[..., None])[lay.building]
    # Roofing (tiles, concrete, metal, tar) is flat or rising into NIR: about its brightest band.
    nir[lay.building] = (lay.roof.max(axis=-1) * 1.05 * lay.gable)[lay.building]

    # Tree canopy: one candidate tree per 20 m cell, radius 3.5-7 m, lit from the north-west;
    # smooth noise clusters them into groves (and woods on farmland).
    cell = 20.0
    ti, tj = (coords[None, :] // cell).astype(int), (coords[:, None] // cell).astype(int)
    tt = rng.random((tj.max() + 1, ti.max() + 1, 4)).astype(np.float32)
    t = tt[tj, ti]
    tx = (ti + 0.35 + 0.3 * t[..., 1]) * cell - coords[None, :]
    ty = (tj + 0.35 + 0.3 * t[..., 2]) * cell - coords[:, None]
    rad = 3.5 + 3.5 * t[..., 3]
    prob = np.array([_TREE_PROB.get(c, 0.0) for c in range(len(CLASSES))], np.float32)[lu]
    groves = _value_noise(rng, (n, n), 60)
    prob = prob * (0.3 + 1.4 * groves)
    woods = farm & (groves > 0.72)
    prob[woods] = 0.9
    # a wood's floor is grass and undergrowth, not the ploughed field it replaces
    rgb[woods] = (np.array(_UNDERSTORY_RGB, np.float32) * (0.85 + 0.3 * lawn))[woods]
    nir[woods] = _UNDERSTORY_NIR
    ground_px = ~lay.building & ~np.isin(lu, (ROAD, WATER))
    tree = (tx**2 + ty**2 < rad**2) & (t[..., 0] < prob) & ground_px
    lit = 1 + 0.35 * (tx + ty) / (rad * 1.42)  # pixel west/north of centre: brighter
    canopy = np.array([46, 82, 40], np.float32) * lit[..., None] * (0.9 + 0.2 * lawn)
    rgb[tree] = canopy[tree]
    nir[tree] = 200 * lit[tree]

    # Shadows towards the south-east: length grows with floors (sun about 60 degrees up).
    length = np.round(lay.floors * 1.6 / PIXEL_M).astype(int)
    shadow = np.zeros((n, n), bool)
    for s in range(1, int(length.max()) + 1):
        shadow[s:, s:] |= (lay.building & (length >= s))[:-s, :-s]
    tree_shadow = np.zeros_like(shadow)
    tree_shadow[2:, 2:] = tree[:-2, :-2]
    dark = (shadow | tree_shadow) & ~lay.building & ~tree
    rgb[dark] *= 0.55
    nir[dark] *= 0.6

    rgb[lu == WATER] *= (0.9 + 0.2 * lawn)[lu == WATER]
    light = 0.94 + 0.12 * _value_noise(rng, (n, n), 128)
    grain = rng.normal(0, 5, (n, n, 3)).astype(np.float32)
    rgb = rgb * light[..., None] + grain
    nir = nir * light + grain[..., 1]
    # 0 is kept out: many tools read a 0 pixel in uint8 imagery as nodata.
    return np.clip(np.concatenate([rgb.transpose(2, 0, 1), nir[None]]), 1, 255).astype(np.uint8)


def _fine_counts(lay: _Layout) -> dict[str, np.ndarray]:
    """People, GDP and CO2 per imagery pixel (float64), following buildings, floors and traffic."""
    counts = {name: np.zeros(lay.landuse.shape) for name in INDICATORS}
    for z, (people, co2, gdp) in _PER_FLOOR.items():
        on = lay.building & (lay.landuse == z)
        stock = lay.floors[on] * lay.block_noise[on]
        counts["population"][on] = people * stock
        counts["carbon"][on] = co2 * stock
        counts["gdp"][on] = gdp * stock
    road = lay.landuse == ROAD
    counts["carbon"][road] += np.where(lay.arterial[road], 0.6, 0.08) * lay.block_noise[road]
    farm = lay.landuse == FARMLAND
    counts["population"][farm] += 0.0015 * lay.block_noise[farm]  # scattered farmsteads
    return counts


def _centres_in(crs: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the 2x2 groups of imagery pixels, in ``crs``."""
    step = 2 * PIXEL_M
    xs = ORIGIN[0] + (np.arange(n) + 0.5) * step
    ys = ORIGIN[1] - (np.arange(n) + 0.5) * step
    gx, gy = np.meshgrid(xs, ys)
    return Transformer.from_crs(CRS, crs, always_xy=True).transform(gx.ravel(), gy.ravel())


def _rebin(values: np.ndarray, centres: tuple[np.ndarray, np.ndarray], crs: str, res: float,
           size_m: float) -> tuple[np.ndarray, rasterio.Affine]:
    """Sum fine counts onto a ``res`` grid in ``crs``: each 2x2 group of imagery pixels goes,
    whole, to the target pixel holding its centre, so the total is preserved exactly."""
    n = values.shape[0] // 2
    coarse = values[: 2 * n, : 2 * n].reshape(n, 2, n, 2).sum(axis=(1, 3))
    outline = shapely.segmentize(shapely.box(ORIGIN[0], ORIGIN[1] - size_m, ORIGIN[0] + size_m,
                                             ORIGIN[1]), 100)
    to = Transformer.from_crs(CRS, crs, always_xy=True)
    bx, by = to.transform(*shapely.get_coordinates(outline).T)
    left, top = np.floor(bx.min() / res) * res, np.ceil(by.max() / res) * res
    width = int(np.ceil((bx.max() - left) / res))
    height = int(np.ceil((top - by.min()) / res))
    tx, ty = centres
    idx = np.floor((top - ty) / res).astype(int) * width + np.floor((tx - left) / res).astype(int)
    total = np.bincount(idx, weights=coarse.ravel(), minlength=width * height)
    hit = np.bincount(idx, minlength=width * height) > 0
    out = np.where(hit, total, NODATA).reshape(height, width).astype(np.float32)
    return out, from_origin(left, top, res, res)


def _write_tif(path: Path, data: np.ndarray, crs: str, transform: rasterio.Affine, *,
               nodata: float | None, tags: dict[str, str], units: str | None = None,
               descriptions: tuple[str, ...] = (), overviews: bool = False) -> None:
    profile = {"driver": "GTiff", "width": data.shape[-1], "height": data.shape[-2],
               "count": data.shape[0], "dtype": data.dtype.name, "crs": crs,
               "transform": transform, "nodata": nodata, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        ds.write(data)
        ds.update_tags(**_TAGS, **tags)
        for band, text in enumerate(descriptions, start=1):
            ds.set_band_description(band, text)
        if units:
            ds.set_band_unit(1, units)
        if descriptions[:4] == ("red", "green", "blue", "nir"):
            ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                              ColorInterp.undefined]
        if overviews:
            ds.build_overviews([2, 4, 8], Resampling.average)


def _write_aoi(path: Path, size_m: float, seed: int) -> None:
    inset = 25.0  # keeps a 1 km grid at 36 cells despite round-off at the edges
    x0, y0 = ORIGIN
    square = shapely.segmentize(shapely.box(x0 + inset, y0 - size_m + inset,
                                            x0 + size_m - inset, y0 - inset), 50)
    frame = gpd.GeoDataFrame({"name": ["Synthetica (synthetic city)"], "synthetic": [True],
                              "seed": [seed]}, geometry=[square], crs=CRS).to_crs("EPSG:4326")
    with atomic_path(path) as tmp:
        pyogrio.write_dataframe(frame, tmp, driver="GeoJSON", layer="aoi")


def make_synthetic_city(out_dir: str | Path, seed: int = 0, size_km: float = 6,
                        progress: Progress = SILENT) -> SampleCity:
    """Generate the synthetic city into ``out_dir`` (overwriting its files) and return the paths.

    Deterministic: the same ``seed`` and ``size_km`` give byte-identical files.
    """
    if not 1 <= size_km <= 20:
        raise InputError(f"size_km={size_km}: the synthetic city must be 1 to 20 km wide")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size_m = float(size_km) * 1000
    n = int(round(size_m / PIXEL_M))
    rng = np.random.default_rng(seed)
    progress.start("synthetic city", 3 + len(INDICATORS))
    lay = _layout(rng, size_m, n)
    progress.advance()
    image = _render(rng, lay)
    transform = from_origin(ORIGIN[0], ORIGIN[1], PIXEL_M, PIXEL_M)
    tags = {"SEED": str(seed), "TIFFTAG_IMAGEDESCRIPTION":
            f"SYNTHETIC procedural city (urbangeo, seed {seed}); not a real place"}
    _write_tif(out / "imagery.tif", image, CRS, transform, nodata=None, tags=tags,
               descriptions=("red", "green", "blue", "nir"), overviews=True)
    progress.advance()
    _write_tif(out / "landuse.tif", lay.landuse[None], CRS, transform, nodata=None,
               tags={**tags, "CLASSES": json.dumps(dict(enumerate(CLASSES)))},
               descriptions=("landuse",))
    progress.advance()
    centres: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, values in _fine_counts(lay).items():
        file, stat, units, crs, res = INDICATORS[name]
        if crs not in centres:
            centres[crs] = _centres_in(crs, n // 2)
        data, grid = _rebin(values, centres[crs], crs, res, size_m)
        _write_tif(out / file, data[None], crs, grid, nodata=NODATA, units=units,
                   tags={**tags, "INDICATOR": name, "STAT": stat, "units": units},
                   descriptions=(name,))
        progress.advance()
    _write_aoi(out / "aoi.geojson", size_m, seed)
    progress.finish()
    return SampleCity(out_dir=out, imagery=out / "imagery.tif", landuse=out / "landuse.tif",
                      population=out / INDICATORS["population"][0], gdp=out / INDICATORS["gdp"][0],
                      carbon=out / INDICATORS["carbon"][0], aoi=out / "aoi.geojson", seed=seed)
