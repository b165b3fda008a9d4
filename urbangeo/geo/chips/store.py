"""The chip store: one uint8 chip per cell in a Zarr v3 group, keyed by ``cell_id``.

Layout (readable by zarr or ``xarray.open_zarr``):

- ``chips``      (cell, band, y, x) uint8, one cell per chunk, grows along ``cell``;
- ``cell_id``    (cell,) str, the key of each slot;
- ``valid_frac`` (cell,) float32, the fraction of the chip covered by imagery; 0 until the
  slot's chip is completely written, so it doubles as the "done" flag;
- group attributes ``tile_px``, ``band_names``, ``pixel_size_m`` and whatever the writer adds
  (sources, stretch).

Why this order: zarr writes every chunk file atomically, and a chip's data is written before its
``valid_frac``, so a job killed at any instant loses at most the chips being written (one
:meth:`ChipStore.write_many` batch) and a rerun simply cuts them again. Writes must come from one
thread at a time (``cut_chips`` hands them to a single writer thread).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from urbangeo._atomic import atomic_path
from urbangeo.errors import InputError

FORMAT = "urbangeo-chips/1"
_INDEX_CHUNK = 65536


class ChipStore:
    """Read and append chips; open with :meth:`create`, :meth:`open` or :meth:`open_or_create`."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self._group = group
        self._chips = group["chips"]
        self._ids = group["cell_id"]
        self._valid = group["valid_frac"]
        ids = self._ids[:] if self._ids.shape[0] else np.array([], dtype=str)
        valid = self._valid[:] if self._valid.shape[0] else np.array([], dtype=np.float32)
        self._slot: dict[str, int] = {str(cid): i for i, cid in enumerate(ids) if cid}
        self._present: set[str] = {str(ids[i]) for i in np.flatnonzero(valid > 0) if ids[i]}

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, tile_px: int, band_names: Sequence[str],
               pixel_size_m: float, attrs: dict[str, Any] | None = None,
               overwrite: bool = False) -> ChipStore:
        """A new empty store at ``path`` (an existing store is replaced only with ``overwrite``).

        The empty store is built beside ``path`` and renamed into place, so a kill never leaves
        a half-made store that neither a rerun nor ``--overwrite`` would accept.
        """
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise InputError(f"chip store {path} already exists: pass --overwrite to "
                                 "replace it")
            if not _is_chip_store(path):
                raise InputError(f"{path} exists and is not a chip store: choose another "
                                 "--store path")
        with atomic_path(path) as tmp:
            _init_group(tmp, tile_px, band_names, pixel_size_m, attrs)
        return cls(path, zarr.open_group(str(path), mode="r+", zarr_format=3))

    @classmethod
    def open(cls, path: str | Path, *, tile_px: int | None = None,
             band_names: Sequence[str] | None = None, read_only: bool = True) -> ChipStore:
        """An existing store; ``tile_px``/``band_names``, when given, must match what it holds."""
        path = Path(path)
        if not _is_chip_store(path):
            raise InputError(f"{path} is not a chip store: cut chips with `urbangeo chips`")
        group = zarr.open_group(str(path), mode="r" if read_only else "r+", zarr_format=3)
        store = cls(path, group)
        if tile_px is not None and tile_px != store.tile_px:
            raise InputError(f"chip store {path} holds {store.tile_px} px chips, not {tile_px}: "
                             "use a new --store path or --overwrite")
        if band_names is not None and list(band_names) != store.band_names:
            raise InputError(f"chip store {path} holds bands {','.join(store.band_names)}, not "
                             f"{','.join(band_names)}: use a new --store path or --overwrite")
        return store

    @classmethod
    def open_or_create(cls, path: str | Path, *, tile_px: int, band_names: Sequence[str],
                       pixel_size_m: float, attrs: dict[str, Any] | None = None,
                       overwrite: bool = False) -> ChipStore:
        """Append to the store at ``path`` if it exists and matches, else start a new one."""
        if Path(path).exists() and not overwrite:
            return cls.open(path, tile_px=tile_px, band_names=band_names, read_only=False)
        return cls.create(path, tile_px=tile_px, band_names=band_names,
                          pixel_size_m=pixel_size_m, attrs=attrs, overwrite=overwrite)

    # -- what it holds -------------------------------------------------------------------------
    @property
    def tile_px(self) -> int:
        return int(self._group.attrs["tile_px"])

    @property
    def band_names(self) -> list[str]:
        return list(self._group.attrs["band_names"])

    @property
    def pixel_size_m(self) -> float:
        return float(self._group.attrs["pixel_size_m"])

    @property
    def ground_resolution_m(self) -> float:
        """The finest detail the chips can show: their pixel size, or the imagery's own ground
        resolution when that is coarser (a 30 m Landsat scene cut at 4 m/px still shows 30 m)."""
        return max(self.pixel_size_m, float(self._group.attrs.get("source_resolution_m") or 0))

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    def __contains__(self, cell_id: object) -> bool:
        return cell_id in self._present

    def __len__(self) -> int:
        return len(self._present)

    def cell_ids(self) -> list[str]:
        """Ids of the complete chips, in storage order."""
        return sorted(self._present, key=self._slot.__getitem__)

    def valid_frac(self, cell_id: str) -> float:
        """Fraction of the chip that imagery covered (the rest is stored as 0)."""
        return float(self._valid[self._slot_of(cell_id)])

    def read(self, cell_id: str) -> np.ndarray:
        """The chip of ``cell_id`` as (C, H, W) uint8."""
        return np.asarray(self._chips[self._slot_of(cell_id)])

    def read_many(self, cell_ids: Iterable[str]) -> np.ndarray:
        """The chips of ``cell_ids`` (in that order) as (N, C, H, W) uint8."""
        slots = [self._slot_of(cid) for cid in cell_ids]
        if not slots:
            return np.zeros((0, len(self.band_names), self.tile_px, self.tile_px), np.uint8)
        return np.asarray(self._chips.get_orthogonal_selection((np.asarray(slots),)))

    def _slot_of(self, cell_id: str) -> int:
        if cell_id not in self._present:
            raise KeyError(f"no chip for cell {cell_id!r} in {self.path}")
        return self._slot[cell_id]

    # -- writing (one thread) ------------------------------------------------------------------
    def reserve(self, cell_ids: Iterable[str]) -> None:
        """Give slots to ids that have none, growing the arrays once (not once per chip)."""
        new = [cid for cid in dict.fromkeys(cell_ids) if cid not in self._slot]
        if not new:
            return
        start = self._ids.shape[0]
        end = start + len(new)
        self._chips.resize((end, *self._chips.shape[1:]))
        for array in (self._valid, self._ids):
            array.resize((end,))
        self._ids[start:end] = np.array(new, dtype=str)
        self._slot.update({cid: start + i for i, cid in enumerate(new)})

    def write(self, cell_id: str, chip: np.ndarray, valid_frac: float = 1.0) -> None:
        """Store ``chip`` (C, H, W) uint8 for ``cell_id`` (replacing any earlier one);
        ``valid_frac`` in (0, 1] is the share of it that imagery covered."""
        self.write_many([(cell_id, chip, valid_frac)])

    def write_many(self, items: Sequence[tuple[str, np.ndarray, float]]) -> None:
        """:meth:`write` for several ``(cell_id, chip, valid_frac)`` at once (distinct ids).

        One zarr call per array instead of one per chip: zarr's per-call overhead and its
        one-thread-per-call encoding made writes a third of a local cutting run. All chips reach
        disk before any of their ``valid_frac``, so a kill still never marks a partial chip.
        """
        expected = (len(self.band_names), self.tile_px, self.tile_px)
        for _, chip, valid_frac in items:
            if chip.shape != expected or chip.dtype != np.uint8:
                raise ValueError(f"chip must be uint8 {expected}, got {chip.dtype} {chip.shape}")
            if not 0.0 < valid_frac <= 1.0:
                raise ValueError(f"valid_frac must be in (0, 1], got {valid_frac}")
        if not items:
            return
        ids = [cid for cid, _, _ in items]
        if len(set(ids)) != len(ids):
            raise ValueError("write_many got the same cell_id twice")
        self.reserve(ids)
        slots = np.array([self._slot[cid] for cid in ids])
        replaced = [cid in self._present for cid in ids]
        if any(replaced):
            self._valid.set_orthogonal_selection((slots[replaced],), 0.0)
            self._present.difference_update(ids)
        self._chips.set_orthogonal_selection((slots,), np.stack([chip for _, chip, _ in items]))
        # last: the chips count only once their data is on disk
        self._valid.set_orthogonal_selection(
            (slots,), np.array([frac for _, _, frac in items], dtype=np.float32))
        self._present.update(ids)


def _is_chip_store(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def _init_group(path: Path, tile_px: int, band_names: Sequence[str], pixel_size_m: float,
                attrs: dict[str, Any] | None) -> None:
    """Lay out an empty store at ``path`` (see the module docstring)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    n_bands = len(band_names)
    group.create_array("chips", shape=(0, n_bands, tile_px, tile_px),
                       chunks=(1, n_bands, tile_px, tile_px), dtype="uint8", fill_value=0,
                       dimension_names=("cell", "band", "y", "x"))
    group.create_array("cell_id", shape=(0,), chunks=(_INDEX_CHUNK,), dtype=str,
                       dimension_names=("cell",))
    group.create_array("valid_frac", shape=(0,), chunks=(_INDEX_CHUNK,), dtype="float32",
                       fill_value=0.0, dimension_names=("cell",))
    # store_id: a new id for every new store, so caches keyed on the store (embeddings,
    # evaluation features, training runs) never take chips re-cut at the same path for the old.
    group.attrs.update({"format": FORMAT, "store_id": uuid.uuid4().hex, "tile_px": int(tile_px),
                        "band_names": list(band_names), "pixel_size_m": float(pixel_size_m),
                        **(attrs or {})})
