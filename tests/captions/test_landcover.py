"""Land-cover measurements: synthetic chips with known answers, then real SF Bay/Haiti chips."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from real_chips import HAITI_BANDS, SF_BANDS, haiti_chip, sfbay_chip

from urbangeo.captions.landcover import (
    CLASSES,
    PAVED_BUILT_SHARE,
    _box_mean,
    _paved,
    find_lines,
    local_std,
    measure,
)
from urbangeo.errors import DataError


def _rgbn(r: float, g: float, b: float, n: float, size: int = 64) -> np.ndarray:
    return np.stack([np.full((size, size), v, np.uint8) for v in (r, g, b, n)])


def test_ndvi_and_ndwi_separate_vegetation_and_water():
    veg = measure(_rgbn(40, 60, 40, 160), ["red", "green", "blue", "nir"])
    water = measure(_rgbn(20, 40, 60, 5), ["red", "green", "blue", "nir"])
    assert veg.fractions["vegetation"] == 1.0 and veg.dominant == "vegetation"
    assert water.fractions["water"] == 1.0


def test_rgb_only_uses_excess_green_and_dark_smooth_blue_water():
    veg = measure(_rgbn(60, 120, 50, 0)[:3], ["red", "green", "blue"])
    water = measure(_rgbn(20, 30, 45, 0)[:3], ["red", "green", "blue"])
    grey = measure(_rgbn(120, 120, 120, 0)[:3], ["red", "green", "blue"])
    assert veg.dominant == "vegetation" and not veg.has_nir
    assert water.dominant == "water"
    assert grey.dominant == "bare"  # smooth grey, no texture: not buildings


def test_texture_marks_built_up_and_sectors_locate_it():
    rng = np.random.default_rng(0)
    chip = _rgbn(150, 140, 130, 110, 90)
    chip[:, :30, :30] = rng.integers(40, 230, (30, 30), dtype=np.uint8)  # grey roofs, north-west
    cover = measure(chip, ["red", "green", "blue", "nir"], pixel_size_m=2.0)
    built = cover.sectors["built"]
    assert built[0, 0] > 0.9 and built[2, 2] == 0.0
    assert cover.fractions["built"] == pytest.approx(1 / 9, abs=0.04)
    assert sum(cover.fractions[c] for c in CLASSES) == pytest.approx(1.0)


def test_local_std_of_constant_image_is_zero():
    assert float(local_std(np.full((20, 20), 7.0, np.float32)).max()) == pytest.approx(0, abs=1e-3)


def test_straight_road_found_with_orientation_and_sector():
    rng = np.random.default_rng(1)
    lum = rng.normal(100, 8, (256, 256))
    lum[:, 200:206] = 200  # north-south road in the east third
    lines = find_lines(lum)
    assert lines and lines[0].orientation == "north-south" and lines[0].sector == "east"
    assert lines[0].length_fraction > 0.5
    diag = rng.normal(100, 8, (256, 256))
    idx = np.arange(256)
    for w in range(4):
        diag[idx, np.clip(idx + w, 0, 255)] = 30  # dark diagonal, north-west to south-east
    assert find_lines(diag)[0].orientation == "north-west to south-east"
    assert find_lines(rng.normal(100, 30, (256, 256))) == []  # noise is not a road


def test_bad_chips_raise_data_error():
    with pytest.raises(DataError, match="only nodata"):
        measure(np.zeros((3, 8, 8), np.uint8), ["red", "green", "blue"])
    with pytest.raises(DataError, match="uint8"):
        measure(np.ones((3, 8, 8), np.float32), ["red", "green", "blue"])
    with pytest.raises(DataError, match="one name per band"):
        measure(np.ones((3, 8, 8), np.uint8), ["red", "green"])
    with pytest.raises(DataError, match="lack"):
        measure(np.ones((2, 8, 8), np.uint8), ["nir", "swir"])


def _fabric(size: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Random built pixels on open land, denser in the west so the paved share varies."""
    rng = np.random.default_rng(seed)
    west = np.linspace(0.9, 0.05, size)[None, :]
    built = rng.random((size, size)) < west
    return built, built | (rng.random((size, size)) < 0.5)


def test_paved_window_unchanged_while_it_fits_the_chip():
    built, open_land = _fabric(160)
    k = 91  # 90 m at 1 m/px, under the 2 * 160 + 1 cap
    share = _box_mean(built.astype(np.float32), k) / np.maximum(
        _box_mean(open_land.astype(np.float32), k), 1e-6)
    expected = open_land & (share > PAVED_BUILT_SHARE)
    paved = _paved(built, open_land, 1.0)
    assert np.array_equal(paved, expected)
    assert 0 < (paved & ~built).sum() < (open_land & ~built).sum()  # the test can tell apart


def test_paved_window_capped_at_the_chip_at_centimetre_pixels():
    """1 cm/px asks for a 9001-px window: an 8 x 8 chip once padded to 9009^2 float64 (650 MB)."""
    built, open_land = _fabric(8)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        paved = _paved(built, open_land, 0.01)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 1_000_000
    assert np.array_equal(paved, _paved(built, open_land, 90.0 / 17))  # the 17-px whole-chip window
    cover = measure(_rgbn(150, 140, 130, 110, 8), ["red", "green", "blue", "nir"], 0.01)
    assert sum(cover.fractions.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("pixel_size", [0, -1.0, float("nan"), float("inf"), None, "abc"])
def test_bad_pixel_size_raises_data_error(pixel_size):
    with pytest.raises(DataError, match="pixel size .* not a positive number"):
        measure(_rgbn(150, 140, 130, 110, 8), ["red", "green", "blue", "nir"], pixel_size)


@pytest.mark.parametrize("place, dominant", [("bay", "water"), ("hills", "vegetation"),
                                             ("downtown", "built"), ("oakland", "built")])
def test_sfbay_landsat_false_colour(shared_data, place, dominant):
    cover = measure(sfbay_chip(shared_data, place), SF_BANDS, pixel_size_m=30.0)
    assert cover.dominant == dominant
    assert cover.fractions[dominant] > 0.6


def test_sfbay_dry_grassland_is_bare_while_street_grid_stays_built(shared_data):
    """At 24 m dry grass is as smooth and bright as city blocks; its warm colour tells it apart."""
    grass = measure(sfbay_chip(shared_data, "dry_grass"), SF_BANDS, pixel_size_m=30.0)
    grid = measure(sfbay_chip(shared_data, "hayward_grid"), SF_BANDS, pixel_size_m=30.0)
    assert grass.dominant == "bare" and grass.fractions["built"] < 0.25
    assert grid.dominant == "built" and grid.fractions["built"] > 0.7
    assert grid.fractions["bare"] < 0.1  # the dry-land test does not eat the city


def test_warm_low_ndvi_is_dry_land_and_flat_grey_is_built_at_30m():
    bands = ["nir", "red", "green"]
    dry = measure(np.stack([np.full((32, 32), v, np.uint8) for v in (110, 90, 75)]), bands, 30.0)
    grey = measure(np.stack([np.full((32, 32), v, np.uint8) for v in (90, 85, 88)]), bands, 30.0)
    assert dry.fractions["bare"] == 1.0  # NDVI 0.1, warmth 0.19, red over green
    assert grey.fractions["built"] == 1.0  # spectrally flat: pavement and roofs


@pytest.mark.parametrize("place, dominant", [("settlement", "built"), ("river_bed", "bare"),
                                             ("trees", "vegetation")])
def test_haiti_rgbn(shared_data, place, dominant):
    chip, pixel_size = haiti_chip(shared_data, place)
    assert measure(chip, HAITI_BANDS, pixel_size).dominant == dominant


def test_haiti_settlement_without_nir_is_still_built(shared_data):
    chip, pixel_size = haiti_chip(shared_data, "settlement")
    assert measure(chip[:3], HAITI_BANDS[:3], pixel_size).dominant == "built"


def test_haiti_river_bed_borders_are_not_buildings(shared_data):
    """Gravel against scrub is textured but not busy: no invented buildings in a river bed."""
    chip, pixel_size = haiti_chip(shared_data, "river_bed")
    assert measure(chip, HAITI_BANDS, pixel_size).fractions["built"] < 0.05
