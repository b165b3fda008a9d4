"""Measure what a chip shows from its pixels alone (numpy only): the facts ``describe`` tells.

Every pixel that is not nodata gets exactly one class, tested in this order:

1. **water** — with a NIR band: NDWI = (G − NIR)/(G + NIR) > ``WATER_NDWI`` (0.2). McFeeters'
   index is > 0 over water; the 0.2 margin and a dark NIR (< ``WATER_NIR`` = 50: water absorbs
   NIR, bay water reads 0 in the SF scene) keep Haiti's green-tinted roofs (NDWI > 0.2, NIR ≈ 75)
   out. Without NIR: dark (luminance < ``WATER_DARK``), blue at least as
   strong as red and green, and smooth (local std < ``WATER_SMOOTH``): open water is the only
   large dark, blue-ish, featureless surface in true-colour imagery.
2. **vegetation** — NDVI = (NIR − R)/(NIR + R) > ``VEG_NDVI`` (0.2), the usual lower bound of
   sparse vegetation; built surfaces and bare soil stay below 0.15 in both test scenes, the
   Oakland hills sit at ≈ 0.6 and Haiti's (uncalibrated) tree cover at ≈ 0.2–0.4. Without NIR
   the normalised excess-green index (2G − R − B)/(R + G + B) > ``VEG_EXG`` (0.05).
3. **built-up** — at fine resolution (pixels < ``COARSE_M`` = 10 m, where single buildings are
   resolved) the rest when it is textured: local luminance std over a ``TEXTURE_WIN``-pixel
   window > ``BUILT_TEXTURE`` (15 of 255). Roofs, streets and shadows alternate over a few
   pixels; Haiti's settlements give a median of ≈ 27, its gravel river bed ≈ 10, fields ≈ 4.
   The border between two smooth surfaces (gravel against scrub) is textured too, so a built
   pixel also needs a busy neighbourhood: more than ``BUILT_EDGES`` (20%) of the window's pixels
   are edges. Over Haiti's settlement the median is 0.4; along the river bed's borders 0.
   Smooth pavement (streets, squares, car parks, flat roofs) amid that fabric is built-up too:
   where built pixels make up more than ``PAVED_BUILT_SHARE`` (half) of the unvegetated dry
   land within ``PAVED_CONTEXT_M`` (90 m). In the synthetic city this turns downtown from 27%
   to 3% "bare"; Haiti's gravel river bed, among scrub, stays bare.
   At coarse resolution (Landsat) a pixel mixes roofs, streets and yards into one smooth grey
   value, so texture says nothing: the rest is built-up unless very bright or dry (below).
4. **bare** — fine resolution: the smooth rest (soil, sand, gravel, dry river beds, bare lots).
   Coarse resolution: the rest brighter than ``COARSE_BARE_LUM`` (130, the 99th percentile of
   unvegetated land in the SF Bay scene, whose grey urban fabric sits at 60–100): sand, salt
   flats, quarries — and, unavoidably without SWIR, the largest bright roofs. With a NIR band
   also *dry* land: summer grassland and bare soil, which at 24–30 m is as smooth and as bright
   as the urban fabric (luminance 76–100 against 56–116; 3 × 3 local std median 5 against
   7–12, but a 90th percentile of 11 on both, so neither separates them). What does is colour.
   Concrete, asphalt and roofs are spectrally flat across green, red and NIR; senescent grass
   and iron-bearing soil rise steadily towards the NIR. A dry pixel therefore has
   NDVI > ``DRY_NDVI`` (0.05: some dry matter, where pavement sits at 0.02 in downtown SF),
   warmth (NIR − G)/(NIR + G) > ``DRY_WARM`` (0.12) and red above green,
   (R − G)/(R + G) > ``DRY_RED_GREEN`` (0.02). On the Hayward shore grassland
   (cell E578-N4163) warmth has a median of 0.18 and red−green 0.04; in downtown SF,
   Oakland and Hayward's industrial and street-grid blocks both sit at 0.00–0.06, and only
   0–9% of their unvegetated pixels pass all three tests (bare lots, dry yards: which they
   are), against 63% on the grassland. The same rule paints SFO's and Oakland airport's
   grass infields bare and leaves their terminals and aprons built-up.

Besides the class fractions it measures texture (mean local std), edge density, the 3 × 3
sector shares of each class (row 0 = north: chips are north-up) and long straight linear
features with a gradient-oriented Hough transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from urbangeo.errors import DataError

CLASSES = ("water", "vegetation", "built", "bare")

WATER_NDWI = 0.2
WATER_NIR = 50.0
WATER_DARK = 60.0
WATER_SMOOTH = 6.0
VEG_NDVI = 0.2
VEG_EXG = 0.05
BUILT_TEXTURE = 15.0
BUILT_EDGES = 0.2
PAVED_CONTEXT_M = 90.0
PAVED_BUILT_SHARE = 0.5
COARSE_M = 10.0
COARSE_BARE_LUM = 130.0
DRY_NDVI = 0.05
DRY_WARM = 0.12
DRY_RED_GREEN = 0.02
TEXTURE_WIN = 9
EDGE_GRADIENT = 20.0
"""Luminance gradient (central difference, 0–255 scale) above which a pixel counts as an edge."""
LINE_WORK_PX = 128
"""Linear features are sought on a chip block-averaged to at most this side: fast and de-noised."""
LINE_MIN_FRACTION = 0.2
"""A line must collect edge votes along at least this fraction of the chip side to count as long.

Chance alignments in busy texture (Haiti settlement, Oakland, Berkeley hills) peak at 0.13 or
less; the straight road along Haiti's tree-covered east bank scores 0.23."""

SECTOR_NAMES = (
    ("north-west", "north", "north-east"),
    ("west", "centre", "east"),
    ("south-west", "south", "south-east"),
)


@dataclass(frozen=True)
class LinearFeature:
    """A long straight edge pair (road, railway, canal, runway) crossing the chip."""

    orientation: str  # "north-south", "east-west", "north-east to south-west", ...
    sector: str  # the 3 x 3 sector its midpoint falls in
    length_fraction: float  # votes / chip side: ~1 means it crosses the whole chip
    brighter: bool  # brighter than its surroundings (concrete, gravel) or darker (asphalt, water)


@dataclass(frozen=True)
class LandCover:
    """Per-chip measurements; fractions are of valid (non-nodata) pixels."""

    fractions: dict[str, float]
    sectors: dict[str, np.ndarray]  # class -> (3, 3) share of each sector's valid pixels
    texture: float  # mean local luminance std (0-255)
    edge_density: float  # fraction of valid pixels with a strong gradient
    built_texture: float  # mean local std over built pixels only (0 when none)
    valid_fraction: float
    has_nir: bool
    lines: list[LinearFeature] = field(default_factory=list)

    @property
    def dominant(self) -> str:
        """The class covering the largest share of the chip."""
        return max(CLASSES, key=lambda c: self.fractions[c])


def _band(chip: np.ndarray, names: Sequence[str], name: str) -> np.ndarray | None:
    lowered = [n.lower() for n in names]
    return chip[lowered.index(name)].astype(np.float32) if name in lowered else None


def _box_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean over a k x k window (reflect-padded) in O(pixels) via an integral image."""
    pad = k // 2
    p = np.pad(img, pad, mode="reflect").astype(np.float64)
    s = np.zeros((p.shape[0] + 1, p.shape[1] + 1))
    s[1:, 1:] = p.cumsum(0).cumsum(1)
    h, w = img.shape
    total = s[k:k + h, k:k + w] - s[:h, k:k + w] - s[k:k + h, :w] + s[:h, :w]
    return total / (k * k)


def local_std(lum: np.ndarray, k: int = TEXTURE_WIN) -> np.ndarray:
    """Luminance standard deviation in a k x k window around each pixel."""
    mean = _box_mean(lum, k)
    var = _box_mean(lum * lum, k) - mean * mean
    return np.sqrt(np.clip(var, 0, None)).astype(np.float32)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = a + b
    return np.where(den > 0, (a - b) / np.where(den > 0, den, 1), 0.0)


def _paved(built: np.ndarray, open_land: np.ndarray, pixel_size_m: float) -> np.ndarray:
    """Pixels amid built-up land: built is most (> ``PAVED_BUILT_SHARE``) of the unvegetated,
    dry land (``open_land``) in a ``PAVED_CONTEXT_M`` window.

    Streets, squares, car parks and large flat roofs are as smooth as bare soil, but they lie
    inside the textured fabric of roofs and shadows, while soil, sand and gravel lie among
    fields, scrub or water. Gardens and street trees are left out of the share, so a suburban
    street between lawns and houses still counts as paved.

    The window is capped at ``2 * max(h, w) + 1`` pixels: it then spans the whole chip from
    every pixel, so a wider one would only pad more reflected copies of the chip (at 1 cm/px
    the 90 m window is 9001 pixels, hundreds of MB of padding for an 8 x 8 chip).
    """
    k = max(TEXTURE_WIN, int(PAVED_CONTEXT_M / pixel_size_m) // 2 * 2 + 1)
    k = min(k, 2 * max(built.shape) + 1)
    share = _box_mean(built.astype(np.float32), k) / np.maximum(
        _box_mean(open_land.astype(np.float32), k), 1e-6)
    return open_land & (share > PAVED_BUILT_SHARE)


def check_pixel_size(pixel_size_m: object) -> float:
    """``pixel_size_m`` as a float, or DataError: every window and tier is derived from it."""
    try:
        value = float(pixel_size_m)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"pixel size {pixel_size_m!r} m is not a positive number: pass the "
                        "chip's ground pixel size in metres (for a chip store, re-run "
                        "`urbangeo chips` to rewrite its attributes)")
    return value


def classify(chip: np.ndarray, band_names: Sequence[str],
             pixel_size_m: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel class index into :data:`CLASSES` (−1 = nodata) and the local-std texture map."""
    pixel_size_m = check_pixel_size(pixel_size_m)
    if chip.ndim != 3 or chip.shape[0] != len(band_names):
        raise DataError(f"chip has shape {chip.shape} but {len(band_names)} band names "
                        f"{list(band_names)}: pass one name per band of a (bands, y, x) array")
    red, green = _band(chip, band_names, "red"), _band(chip, band_names, "green")
    blue, nir = _band(chip, band_names, "blue"), _band(chip, band_names, "nir")
    if red is None or green is None or (blue is None and nir is None):
        raise DataError(f"band names {list(band_names)} lack red, green and blue or nir: "
                        "describe needs red+green plus blue and/or nir")
    present = [b for b in (red, green, blue, nir) if b is not None]
    valid = np.any(np.stack(present) > 0, axis=0)
    lum = (red + green + (blue if blue is not None else nir)) / 3.0
    tex = local_std(lum)

    dry = np.zeros(lum.shape, dtype=bool)
    if nir is not None:
        water = (_ratio(green, nir) > WATER_NDWI) & (nir < WATER_NIR)
        ndvi = _ratio(nir, red)
        veg = ndvi > VEG_NDVI
        dry = ((ndvi > DRY_NDVI) & (_ratio(nir, green) > DRY_WARM)
               & (_ratio(red, green) > DRY_RED_GREEN))
    else:
        water = (lum < WATER_DARK) & (blue >= red) & (blue >= green) & (tex < WATER_SMOOTH)
        veg = (2 * green - red - blue) / np.maximum(red + green + blue, 1) > VEG_EXG
    if pixel_size_m < COARSE_M:
        gy, gx = np.gradient(lum)
        busy = _box_mean((np.hypot(gx, gy) > EDGE_GRADIENT).astype(np.float32), TEXTURE_WIN)
        open_land = ~veg & ~water & valid
        built = (tex > BUILT_TEXTURE) & (busy > BUILT_EDGES) & open_land
        built |= _paved(built, open_land, pixel_size_m)
    else:
        built = (lum < COARSE_BARE_LUM) & ~dry
    cls = np.full(lum.shape, 3, dtype=np.int8)
    cls[built] = 2
    cls[veg] = 1
    cls[water] = 0
    cls[~valid] = -1
    return cls, tex


def _sector_shares(mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros((3, 3))
    h, w = mask.shape
    ys, xs = np.linspace(0, h, 4).astype(int), np.linspace(0, w, 4).astype(int)
    for i in range(3):
        for j in range(3):
            v = valid[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].sum()
            if v:
                out[i, j] = mask[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].sum() / v
    return out


def _block_mean(img: np.ndarray, side: int) -> np.ndarray:
    f = max(1, int(np.ceil(max(img.shape) / side)))
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _orientation_name(theta_deg: float) -> str:
    """Name the direction of a line whose normal points at ``theta_deg`` (0 = east, y down)."""
    line = (theta_deg + 90.0) % 180.0  # direction along the line, image coordinates
    if line < 22.5 or line >= 157.5:
        return "east-west"
    if line < 67.5:
        return "north-west to south-east"  # y grows southwards
    if line < 112.5:
        return "north-south"
    return "north-east to south-west"


def find_lines(lum: np.ndarray, max_lines: int = 3) -> list[LinearFeature]:
    """Long straight edges: a Hough transform where edge pixels vote only near their gradient.

    Voting along the gradient (± one 5° bin) instead of all angles keeps random texture from
    piling up votes, so a peak means many collinear pixels sharing one edge direction: the
    border of a road, railway, canal or runway. A peak needs ``LINE_MIN_FRACTION`` of the side.
    """
    img = _block_mean(lum, LINE_WORK_PX)
    h, w = img.shape
    gy, gx = np.gradient(img)
    mag = np.hypot(gx, gy)
    # the strongest tenth of gradients: in busy texture an absolute threshold marks everything
    edges = (mag > EDGE_GRADIENT / 2) & (mag >= np.percentile(mag, 90))
    if edges.sum() < min(h, w) / 2:
        return []
    ys, xs = np.nonzero(edges)
    theta = np.degrees(np.arctan2(gy[edges], gx[edges])) % 180.0
    n_theta = 36
    bins = (theta / 5.0).astype(int) % n_theta
    diag = int(np.ceil(np.hypot(h, w)))
    acc = np.zeros((n_theta, 2 * diag + 1), dtype=np.int32)
    cx, cy = xs - w / 2.0, ys - h / 2.0
    for shift in (-1, 0, 1):
        b = (bins + shift) % n_theta
        t = np.radians(b * 5.0 + 2.5)
        rho = np.round(cx * np.cos(t) + cy * np.sin(t)).astype(int) + diag
        np.add.at(acc, (b, rho), 1)
    side = min(h, w)
    lines: list[LinearFeature] = []
    work = acc.copy()
    for _ in range(max_lines):
        ti, ri = np.unravel_index(np.argmax(work), work.shape)
        votes = work[ti, ri]
        if votes < LINE_MIN_FRACTION * side:
            break
        t = np.radians(ti * 5.0 + 2.5)
        rho = ri - diag
        mx, my = w / 2.0 + rho * np.cos(t), h / 2.0 + rho * np.sin(t)
        sector = SECTOR_NAMES[min(2, max(0, int(3 * my / h)))][min(2, max(0, int(3 * mx / w)))]
        on_line = np.abs(cx * np.cos(t) + cy * np.sin(t) - rho) < 1.5
        sign = np.mean(gx[edges][on_line] * np.cos(t) + gy[edges][on_line] * np.sin(t))
        # the brighter side lies where the gradient points; the nearer the centre line, the feature
        brighter = bool((sign > 0) == (rho < 0)) if rho != 0 else bool(sign > 0)
        lines.append(LinearFeature(_orientation_name(ti * 5.0 + 2.5), sector,
                                   float(votes / side), brighter))
        # suppress this line and its parallel twin (the feature's other border) nearby
        lo_t, hi_t = ti - 2, ti + 3
        for tt in range(lo_t, hi_t):
            work[tt % n_theta, max(0, ri - 8):ri + 9] = 0
    return _dedupe(lines)


def _dedupe(lines: list[LinearFeature]) -> list[LinearFeature]:
    seen: set[tuple[str, str]] = set()
    out = []
    for line in lines:
        key = (line.orientation, line.sector)
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out


def measure(chip: np.ndarray, band_names: Sequence[str], pixel_size_m: float = 1.0) -> LandCover:
    """All measurements of one ``(bands, y, x)`` uint8 chip; raises DataError when it is all nodata.

    ``pixel_size_m`` is the finest ground detail the chip holds (the source's resolution).
    """
    chip = np.asarray(chip)
    if chip.dtype != np.uint8:
        raise DataError(f"chip dtype is {chip.dtype}; describe expects uint8 (0-255) chips "
                        "as written by the chip store")
    cls, tex = classify(chip, band_names, pixel_size_m)
    valid = cls >= 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise DataError("chip holds only nodata (all bands 0): nothing to describe; "
                        "re-run `urbangeo chips` or drop the cell")
    red, green = _band(chip, band_names, "red"), _band(chip, band_names, "green")
    third = _band(chip, band_names, "blue")
    lum = (red + green + (third if third is not None else _band(chip, band_names, "nir"))) / 3.0
    gy, gx = np.gradient(lum)
    strong = (np.hypot(gx, gy) > EDGE_GRADIENT) & valid
    fractions = {c: float(((cls == i) & valid).sum() / n_valid) for i, c in enumerate(CLASSES)}
    sectors = {c: _sector_shares(cls == i, valid) for i, c in enumerate(CLASSES)}
    built = cls == 2
    return LandCover(
        fractions=fractions,
        sectors=sectors,
        texture=float(tex[valid].mean()),
        edge_density=float(strong.sum() / n_valid),
        built_texture=float(tex[built].mean()) if built.any() else 0.0,
        valid_fraction=n_valid / cls.size,
        has_nir=_band(chip, band_names, "nir") is not None,
        lines=find_lines(np.where(valid, lum, lum[valid].mean())),
    )
