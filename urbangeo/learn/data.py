"""What the learning stages read from a cells file: chips, captions, indicators, positions.

Train, predict, evaluate and similar all start from the same question ("which cells have a
chip, and what do we know about each?"), so it is answered once, here. Only cells with a stored
chip are kept (``has_chip``): a cell without imagery is never embedded from zeros.

This module is torch-free; :func:`to_model_input` imports torch when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from urbangeo.errors import DataError, InputError
from urbangeo.geo.cells import CellsFile, read_cells
from urbangeo.geo.chips.store import ChipStore

if TYPE_CHECKING:
    from torch import Tensor

IN_MEMORY_BYTES = 2 * 1024**3
"""Chips are read into memory once when they fit in this many bytes, else from the store."""


@dataclass
class CellData:
    """The cells of one cells file that have a chip, in file order.

    ``index`` maps each kept row to its row in ``cells_file.cells`` so results can be written
    back beside every cell (cells without a chip stay, flagged, in the output).
    """

    cells_path: Path
    cells_file: CellsFile
    index: np.ndarray
    cell_ids: list[str]
    store: ChipStore
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    captions: dict[str, list[str]] = field(default_factory=dict)
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    rowcol: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    _cache: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.cell_ids)

    @property
    def tile_px(self) -> int:
        return self.store.tile_px

    @property
    def ground_resolution_m(self) -> float:
        return self.store.ground_resolution_m

    def images(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """RGB chips (n, 3, tile_px, tile_px) uint8 of the given positions (all by default).

        The first three stored bands are the RGB the model sees (a NIR band is for captions).
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if self._cache is not None:
            return self._cache[idx]
        return self.store.read_many([self.cell_ids[i] for i in idx])[:, :3]

    def caption_texts(self, column: str = "caption") -> list[str]:
        """The captions of ``column`` for every kept cell; DataError when any is missing."""
        if column not in self.captions:
            raise InputError(f"{self.cells_path} has no '{column}' captions: run "
                             "`urbangeo caption` on it first")
        texts = self.captions[column]
        missing = [cid for cid, text in zip(self.cell_ids, texts, strict=True) if not text]
        if missing:
            raise DataError(f"{len(missing)} cells with a chip have no '{column}' (first: "
                            f"{missing[0]}): rerun `urbangeo caption` to fill them")
        return texts

    def target(self, name: str) -> np.ndarray:
        """Indicator ``name`` per kept cell (float64, NaN where the raster had no data)."""
        if name not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none yet"
            raise InputError(f"{self.cells_path} has no indicator '{name}' (it has: {known}); "
                             "add it with `urbangeo indicators`")
        return self.targets[name]

    def neighbours(self, radius: int = 1) -> list[np.ndarray]:
        """Positions of the kept cells within ``radius`` grid steps of each cell (itself excluded),
        for Tile2Vec-style and neighbour-positive contrastive baselines."""
        where = {(int(r), int(c)): i for i, (r, c) in enumerate(self.rowcol)}
        out = []
        for r, c in self.rowcol:
            near = [where[(r + dr, c + dc)] for dr in range(-radius, radius + 1)
                    for dc in range(-radius, radius + 1)
                    if (dr or dc) and (r + dr, c + dc) in where]
            out.append(np.asarray(near, dtype=np.int64))
        return out


def load_cell_data(cells_path: str | Path, *, in_memory_bytes: int = IN_MEMORY_BYTES) -> CellData:
    """Read the cells with a chip, their indicators, captions and grid positions.

    InputError when the file has no chips yet, or none of its cells has one.
    """
    cells_path = Path(cells_path)
    cf = read_cells(cells_path)
    meta = cf.metadata.get("chips")
    if not meta or "has_chip" not in cf.cells.columns:
        raise InputError(f"{cells_path} has no chips: cut them first with `urbangeo chips "
                         f"{cells_path} --imagery SRC`")
    store_path = Path(meta["store"])
    if not store_path.is_absolute():
        store_path = cells_path.parent / store_path
    store = ChipStore.open(store_path)
    cells = cf.cells
    keep = cells["has_chip"].fillna(False).to_numpy(dtype=bool, copy=True)
    keep &= np.array([cid in store for cid in cells["cell_id"]], dtype=bool)
    index = np.flatnonzero(keep)
    if not len(index):
        raise InputError(f"none of the {len(cells)} cells of {cells_path} has a chip: check "
                         "that the imagery covers the cells (`urbangeo chips`)")
    kept = cells.iloc[index]
    indicators = cf.metadata.get("indicators") or {}
    targets = {name: kept[name].to_numpy(dtype=np.float64) for name in indicators
               if name in kept.columns}
    units = {name: str(spec.get("units") or "") for name, spec in indicators.items()
             if name in targets}
    captions = {col: [text if isinstance(text, str) else "" for text in kept[col]]
                for col in ("caption", "caption_raw") if col in kept.columns}
    centroids = kept.geometry.centroid
    data = CellData(
        cells_path=cells_path, cells_file=cf, index=index,
        cell_ids=[str(c) for c in kept["cell_id"]], store=store, targets=targets, units=units,
        captions=captions, xy=np.column_stack([centroids.x, centroids.y]),
        rowcol=kept[["row", "col"]].to_numpy(dtype=np.int64))
    if len(data) * 3 * store.tile_px**2 <= in_memory_bytes:
        data._cache = store.read_many(data.cell_ids)[:, :3]
    return data


def to_model_input(images: np.ndarray, size: int) -> Tensor:
    """uint8 chips (n, 3, H, W) -> float RGB in [0, 1] at ``size`` px (antialiased resize).

    Every network (UrbanCLIP and the baselines) sees chips through this one function, so a
    comparison never differs by preprocessing.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x
