"""Train/val/test splits of cells: random, or by square spatial blocks (paper §4.1.3).

Neighbouring cells look alike and have similar indicators, so a random split lets a probe
"interpolate" from the cell next door; a block split keeps whole neighbourhoods on one side,
which measures how well a model transfers to unseen parts of the city.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from urbangeo.errors import DataError, InputError

SPLITS = ("train", "val", "test")
SPLIT_KINDS = ("random", "blocks")
BLOCK_CELLS = 4
"""Default block side, in cells."""

SplitKind = Literal["random", "blocks"]


def _check_fractions(fractions: tuple[float, float, float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or (f < 0).any() or f[0] <= 0 or not np.isclose(f.sum(), 1.0):
        raise InputError(f"split fractions must be three non-negative numbers (train > 0) "
                         f"summing to 1, got {fractions}")
    return f


def grid_spacing(xy: np.ndarray) -> float:
    """The cell size read off cell centroids: the smallest step between distinct x or y."""
    steps = [np.diff(np.unique(np.round(xy[:, axis], 6))) for axis in (0, 1)]
    positive = np.concatenate([s[s > 0] for s in steps])
    if not positive.size:
        raise InputError("cannot tell the cell size from a single cell position: pass "
                         "block_size_m")
    return float(positive.min())


def _labels(order: np.ndarray, sizes: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Give each unit (cell or block), taken in ``order``, the split its cumulative midpoint
    falls in, so the splits' cell counts follow the fractions as closely as whole units allow."""
    cum = np.cumsum(sizes[order]) - sizes[order] / 2.0
    bins = np.cumsum(f)[:-1] * sizes.sum()
    labels = np.empty(len(sizes), dtype=object)
    labels[order] = np.asarray(SPLITS, dtype=object)[np.searchsorted(bins, cum, side="right")]
    return labels


def split_cells(xy: np.ndarray, kind: SplitKind, seed: int, *,
                fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                block_size_m: float | None = None, only: np.ndarray | None = None) -> np.ndarray:
    """Label each cell (centroid ``xy`` in metres) "train", "val" or "test"; deterministic.

    ``random``: a seeded permutation cut at the fractions. ``blocks``: square blocks of
    ``block_size_m`` (default 4 cells a side) are shuffled and assigned whole, so no block
    straddles two splits; DataError when the cells span too few blocks to fill every split.
    ``only`` (a boolean mask, e.g. the cells that have a target value) splits just those cells
    and labels the others ""; without it, a city where half the cells lack data would get
    test sets of very uneven size from seed to seed.
    """
    if only is not None:
        only = np.asarray(only, dtype=bool)
        if not only.any():
            raise DataError("no cell has a value to split: check that the indicator raster "
                            "covers the cells (`urbangeo indicators`)")
        if block_size_m is None and kind == "blocks":
            block_size_m = BLOCK_CELLS * grid_spacing(xy)  # the grid's spacing, not the subset's
        labels = np.full(len(xy), "", dtype="<U5")
        labels[only] = split_cells(np.asarray(xy)[only], kind, seed, fractions=fractions,
                                   block_size_m=block_size_m)
        return labels
    f = _check_fractions(fractions)
    xy = np.asarray(xy, dtype=float)
    n = len(xy)
    rng = np.random.default_rng(seed)
    if kind == "random":
        return _labels(rng.permutation(n), np.ones(n), f).astype(str)
    if kind != "blocks":
        raise InputError(f"unknown split '{kind}': choose one of {', '.join(SPLIT_KINDS)}")
    size = block_size_m if block_size_m is not None else BLOCK_CELLS * grid_spacing(xy)
    if size <= 0:
        raise InputError(f"block size must be positive, got {size} m")
    keys = np.floor((xy - xy.min(axis=0)) / size).astype(np.int64)
    _, block_of, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    block_labels = _labels(rng.permutation(len(counts)), counts.astype(float), f)
    labels = block_labels[block_of.ravel()].astype(str)
    empty = [s for s, frac in zip(SPLITS, f, strict=True) if frac > 0 and not (labels == s).any()]
    if empty:
        raise DataError(f"{len(counts)} spatial blocks of {size:g} m are too few to fill the "
                        f"{', '.join(empty)} split: use a smaller block size or a random split")
    return labels
