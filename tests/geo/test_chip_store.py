"""The chip store: keyed by cell_id, appendable, and honest about half-written chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from urbangeo.errors import InputError
from urbangeo.geo.chips.store import ChipStore

NAMES = ["red", "green", "blue"]


def _chip(seed: int, px: int = 16, bands: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (bands, px, px), dtype=np.uint8)


def _new(path: Path, **kw: object) -> ChipStore:
    return ChipStore.create(path, tile_px=16, band_names=NAMES, pixel_size_m=62.5, **kw)


def test_write_read_and_reopen(tmp_path: Path) -> None:
    store = _new(tmp_path / "c.zarr")
    store.reserve(["b", "a", "c"])
    for seed, cid in enumerate(["a", "b", "c"]):
        store.write(cid, _chip(seed), valid_frac=0.5 + seed / 10)

    again = ChipStore.open(tmp_path / "c.zarr")
    assert again.cell_ids() == ["b", "a", "c"]  # storage order = reservation order
    assert "a" in again and "z" not in again and len(again) == 3
    assert np.array_equal(again.read("b"), _chip(1))
    many = again.read_many(["c", "a"])
    assert many.shape == (2, 3, 16, 16)
    assert np.array_equal(many[0], _chip(2)) and np.array_equal(many[1], _chip(0))
    assert again.valid_frac("c") == pytest.approx(0.7)
    assert (again.tile_px, again.band_names, again.pixel_size_m) == (16, NAMES, 62.5)
    with pytest.raises(KeyError, match="z"):
        again.read("z")


def test_appends_across_sessions_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "c.zarr"
    _new(path).write("a", _chip(0))
    store = ChipStore.open_or_create(path, tile_px=16, band_names=NAMES, pixel_size_m=62.5)
    store.write("b", _chip(1))
    store.write("a", _chip(2))
    reopened = ChipStore.open(path)
    assert reopened.cell_ids() == ["a", "b"]
    assert np.array_equal(reopened.read("a"), _chip(2))
    assert zarr.open_group(str(path))["chips"].shape[0] == 2  # no slot wasted on the rewrite


def test_every_new_store_gets_its_own_id(tmp_path: Path) -> None:
    """Caches keyed on the store (embeddings) must not take re-cut chips for the old ones."""
    path = tmp_path / "c.zarr"
    first = _new(path).attrs["store_id"]
    assert ChipStore.open(path).attrs["store_id"] == first  # reopening keeps it
    replaced = ChipStore.create(path, tile_px=16, band_names=NAMES, pixel_size_m=62.5,
                                overwrite=True)
    assert replaced.attrs["store_id"] != first


def test_chip_counts_only_once_fully_written(tmp_path: Path) -> None:
    """A kill between the chip data and its valid_frac leaves a slot that is not a chip."""
    path = tmp_path / "c.zarr"
    store = _new(path)
    store.write("done", _chip(0))
    store.reserve(["killed"])
    zarr.open_group(str(path), mode="r+")["chips"][1] = _chip(1)  # data, but no flag

    reopened = ChipStore.open(path, read_only=False)
    assert "killed" not in reopened and reopened.cell_ids() == ["done"]
    reopened.write("killed", _chip(3))
    assert np.array_equal(ChipStore.open(path).read("killed"), _chip(3))


def test_mismatched_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.zarr"
    _new(path).write("a", _chip(0))
    with pytest.raises(InputError, match="16 px.*--overwrite"):
        ChipStore.open_or_create(path, tile_px=32, band_names=NAMES, pixel_size_m=31.25)
    with pytest.raises(InputError, match="bands red,green,blue.*--overwrite"):
        ChipStore.open(path, band_names=["nir", "red", "green"])
    with pytest.raises(InputError, match="--overwrite"):
        _new(path)
    fresh = ChipStore.open_or_create(path, tile_px=32, band_names=NAMES, pixel_size_m=31.25,
                                     overwrite=True)
    assert len(fresh) == 0 and fresh.tile_px == 32


def test_never_deletes_what_is_not_a_store(tmp_path: Path) -> None:
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a chip store"):
        _new(precious, overwrite=True)
    with pytest.raises(InputError, match="not a chip store"):
        ChipStore.open(precious)
    assert (precious / "keep.txt").exists()


def test_wrong_chip_shape_is_a_bug(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        _new(tmp_path / "c.zarr").write("a", _chip(0, px=8))


def test_xarray_reads_the_store(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    path = tmp_path / "c.zarr"
    _new(path).write("a", _chip(0))
    ds = xr.open_zarr(path, consolidated=False)
    assert ds["chips"].dims == ("cell", "band", "y", "x")
    assert np.array_equal(ds["chips"].values[0], _chip(0))


def test_write_many_is_write_in_one_call(tmp_path: Path) -> None:
    one, many = _new(tmp_path / "one.zarr"), _new(tmp_path / "many.zarr")
    items = [(cid, _chip(seed), 0.25 * (seed + 1)) for seed, cid in enumerate("abc")]
    for item in items:
        one.write(*item)
    many.write_many(items)
    many.write_many([("b", _chip(9), 1.0)])  # replacing keeps the slot
    again = ChipStore.open(tmp_path / "many.zarr")
    assert again.cell_ids() == ["a", "b", "c"]
    assert np.array_equal(again.read("b"), _chip(9)) and again.valid_frac("b") == 1.0
    assert np.array_equal(again.read("c"), ChipStore.open(tmp_path / "one.zarr").read("c"))
    with pytest.raises(ValueError, match="same cell_id twice"):
        many.write_many([("d", _chip(1), 1.0), ("d", _chip(2), 1.0)])
    assert "d" not in many
