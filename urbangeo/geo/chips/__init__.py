"""Chips: one uint8 image per cell, cut from local rasters or XYZ tile servers.

:func:`cut_chips` fills the chip store (:class:`ChipStore`) with the chips that are missing,
so a rerun after a crash or with more cells only does the remaining work, and adds
``has_chip`` / ``chip_valid_frac`` columns plus a ``chips`` metadata section to the cells.

Coverage rule: a chip is stored (``has_chip``) when imagery covers at least
``min_valid_frac`` (default 0.5) of the cell; uncovered pixels are stored as 0 and the covered
fraction is kept in ``chip_valid_frac``. Cells below the threshold are flagged, never stored as
(mostly) black chips.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import Transformer

from urbangeo._concurrency import bounded_map
from urbangeo.errors import CRSError, InputError, NoOverlapError
from urbangeo.geo.cells import CellsFile
from urbangeo.geo.chips.sources import CellWindow, ChipSource, open_sources
from urbangeo.geo.chips.store import ChipStore
from urbangeo.progress import SILENT, Progress

__all__ = ["ChipStore", "ChipsReport", "ChipSource", "cut_chips", "default_store_path",
           "DEFAULT_BANDS", "MIN_VALID_FRAC"]

DEFAULT_BANDS = (1, 2, 3)
MIN_VALID_FRAC = 0.5
_BATCH_CHIPS = 16  # chips per store write: amortises zarr's per-call cost, bounds what a kill loses
_BATCH_SECONDS = 2.0  # slow sources (tile servers) still get their chips on disk promptly


@dataclass
class ChipsReport:
    """What a :func:`cut_chips` run did."""

    store: Path
    cut: int = 0  # chips written by this run
    skipped_existing: int = 0  # already in the store
    no_coverage: int = 0  # no imagery pixel at all: has_chip False
    too_little_coverage: int = 0  # some imagery, below min_valid_frac: has_chip False
    partial: int = 0  # written, but part of the chip had no imagery (stored as 0)
    corrupt_tiles: int = 0  # undecodable tiles treated as missing
    seconds: float = 0.0

    @property
    def with_chip(self) -> int:
        return self.cut + self.skipped_existing

    def summary(self) -> str:
        """One line for the CLI."""
        parts = [f"{self.with_chip} cells with chips ({self.cut} cut, "
                 f"{self.skipped_existing} already stored)"]
        if self.partial:
            parts.append(f"{self.partial} partly covered")
        if self.no_coverage or self.too_little_coverage:
            parts.append(f"{self.no_coverage + self.too_little_coverage} without enough imagery "
                         "(has_chip=False)")
        if self.corrupt_tiles:
            parts.append(f"{self.corrupt_tiles} corrupt tiles skipped")
        return ", ".join(parts) + f" in {self.seconds:.1f} s -> {self.store}"


def default_store_path(cells_path: Path) -> Path:
    """``<cells stem>.chips.zarr`` beside the cells file."""
    return cells_path.with_name(f"{cells_path.stem}.chips.zarr")


def cut_chips(cells_file: CellsFile, cells_path: Path, sources: Sequence[str | ChipSource], *,
              tile_px: int = 256, bands: Sequence[int] | None = None,
              band_names: Sequence[str] | None = None, nir_band: int | None = None,
              store_path: Path | None = None, cache_dir: Path | None = None, workers: int = 4,
              max_connections: int = 4, min_valid_frac: float = MIN_VALID_FRAC,
              overwrite: bool = False,
              progress: Progress = SILENT) -> tuple[CellsFile, ChipsReport]:
    """Cut the missing chips of ``cells_file`` from ``sources`` (first valid pixel wins).

    ``sources`` are raster paths or XYZ URL templates (or ready :class:`ChipSource` objects);
    ``bands`` are the 1-based source bands of the three display channels (default 1,2,3) and
    ``nir_band`` an optional fourth channel named ``nir``. ``workers`` threads cut chips;
    ``max_connections`` bounds the requests open at once to each tile server (be polite: many
    servers allow 2 to 6). Returns the cells with ``has_chip``
    and ``chip_valid_frac`` columns and a ``chips`` metadata section (not yet written to disk).
    """
    started = time.perf_counter()
    cells_path = Path(cells_path)
    indexes = _channel_indexes(bands, nir_band)
    _check_options(tile_px, workers, max_connections, min_valid_frac, cells_file)
    store_path = Path(store_path) if store_path else default_store_path(cells_path)
    report = ChipsReport(store=store_path)
    crs = cells_file.cells.crs
    ids = cells_file.cells["cell_id"].astype(str).tolist()
    bounds = cells_file.cells.geometry.bounds.to_numpy()
    windows = [CellWindow(tuple(b), crs, tile_px) for b in bounds]

    opened = open_sources(sources, indexes=indexes, cache_dir=cache_dir,
                          max_connections=max_connections)
    try:
        names = _band_names(band_names, opened, nir_band, progress)
        covered = [any(s.overlaps(w) for s in opened) for w in windows]
        if not any(covered):
            raise NoOverlapError(_no_overlap_message(cells_file, opened))
        described = [s.describe() for s in opened]
        store = ChipStore.open_or_create(store_path, tile_px=tile_px, band_names=names,
                                         pixel_size_m=_pixel_size_m(cells_file, tile_px),
                                         attrs={"sources": described,
                                                "source_resolution_m":
                                                    _source_resolution_m(opened, cells_file)},
                                         overwrite=overwrite)
        if store.attrs.get("sources") != described:
            raise InputError(f"chip store {store_path} was cut from other imagery or bands: "
                             "use a new --store path or --overwrite")
        fracs = np.zeros(len(ids), dtype=np.float64)
        todo = []
        for i, cid in enumerate(ids):
            if cid in store:
                fracs[i] = store.valid_frac(cid)
                report.skipped_existing += 1
            elif covered[i]:
                todo.append(i)
            else:
                report.no_coverage += 1
        store.reserve(ids[i] for i in todo)
        progress.start("chips", len(todo))
        with _BatchWriter(store) as writer:
            for i, (chip, mask) in bounded_map(
                    lambda i: _mosaic(opened, windows[i], len(indexes)), todo, workers,
                    name="chips"):
                fracs[i] = float(mask.mean())
                if fracs[i] >= min_valid_frac:
                    writer.add(ids[i], chip, fracs[i])
                    report.cut += 1
                    report.partial += int(fracs[i] < 1.0)
                elif fracs[i] == 0.0:
                    report.no_coverage += 1
                else:
                    report.too_little_coverage += 1
                progress.advance()
        progress.finish()
        report.corrupt_tiles = sum(s.corrupt_tiles for s in opened)
    finally:
        for source in opened:
            source.close()

    cells = cells_file.cells.copy()
    in_store = np.array([cid in store for cid in ids], dtype=bool)
    cells["has_chip"] = in_store & (fracs >= min_valid_frac)
    cells["chip_valid_frac"] = fracs
    metadata = dict(cells_file.metadata)
    metadata["chips"] = {
        "store": os.path.relpath(store_path.resolve(), cells_path.resolve().parent),
        "tile_px": tile_px, "band_names": names, "pixel_size_m": store.pixel_size_m,
        "ground_resolution_m": store.ground_resolution_m,
        "sources": [d["source"] for d in described],
        "stretch": {d["source"]: d.get("stretch") for d in described},
        "source_details": described, "min_valid_frac": min_valid_frac,
        "n_chips": int(cells["has_chip"].sum()),
    }
    report.seconds = time.perf_counter() - started
    return CellsFile(cells=cells, metadata=metadata, style_qml=cells_file.style_qml,
                     layer=cells_file.layer), report


class _BatchWriter:
    """Hands chips to :meth:`ChipStore.write_many` in small batches, on one writer thread.

    One zarr call per batch costs about what one per chip did, and compressing on a thread of
    its own overlaps the cutting instead of stalling it. A batch goes out once it holds
    ``_BATCH_CHIPS`` chips or is ``_BATCH_SECONDS`` old, and on leaving the block even after an
    error; at most one batch is in flight, so memory stays small and a crash or kill loses at
    most two small batches of cut chips, never marks a half-written one. A write error is
    raised from :meth:`add` or on leaving the block.
    """

    def __init__(self, store: ChipStore) -> None:
        self._store = store
        self._pending: list[tuple[str, np.ndarray, float]] = []
        self._since = time.monotonic()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chip-writer")
        self._in_flight: Future[None] | None = None

    def add(self, cell_id: str, chip: np.ndarray, valid_frac: float) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append((cell_id, chip, valid_frac))
        if (len(self._pending) >= _BATCH_CHIPS
                or time.monotonic() - self._since >= _BATCH_SECONDS):
            self._submit()

    def _submit(self) -> None:
        self._wait()
        if self._pending:
            pending, self._pending = self._pending, []
            self._in_flight = self._thread.submit(self._store.write_many, pending)

    def _wait(self) -> None:
        if self._in_flight is not None:
            done, self._in_flight = self._in_flight, None
            done.result()

    def __enter__(self) -> _BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._submit()
            self._wait()
        finally:
            self._thread.shutdown(wait=True)


def _mosaic(sources: Sequence[ChipSource], cell: CellWindow,
            n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """First valid pixel wins, in the order the sources were given."""
    chip = np.zeros((n_channels, cell.tile_px, cell.tile_px), np.uint8)
    valid = np.zeros((cell.tile_px, cell.tile_px), bool)
    for source in sources:
        if not source.overlaps(cell):
            continue
        data, mask = source.read(cell)
        fill = mask & ~valid
        # copyto with a mask is several times faster than boolean fancy indexing
        np.copyto(chip, data, where=fill)
        valid |= fill
        if valid.all():
            break
    return chip, valid


def _channel_indexes(bands: Sequence[int] | None, nir_band: int | None) -> list[int]:
    bands = list(bands) if bands is not None else list(DEFAULT_BANDS)
    if len(bands) != 3:
        raise InputError(f"--bands needs three band numbers (display red,green,blue), got "
                         f"{','.join(map(str, bands))}")
    if any(b < 1 for b in bands) or (nir_band is not None and nir_band < 1):
        raise InputError("band numbers start at 1: fix --bands/--nir-band")
    return bands + ([nir_band] if nir_band is not None else [])


def _band_names(band_names: Sequence[str] | None, sources: Sequence[ChipSource],
                nir_band: int | None, progress: Progress) -> list[str]:
    """Given names, else what the first source says its bands are, else red,green,blue; the
    guess is said out loud, since GDAL labels any 3-band byte GeoTIFF red,green,blue and a
    false-colour scene read that way makes captions call forests cities."""
    n = 3 + (nir_band is not None)
    if band_names is None:
        hint = sources[0].band_names_hint()[:3]
        names = [str(h) for h in hint] if all(hint) else ["red", "green", "blue"]
        origin = "from the raster's colour interpretation" if all(hint) else "assumed"
        progress.info(f"chip channels taken as {','.join(names)} ({origin}); if the imagery "
                      "is false colour, say so with --band-names (e.g. nir,red,green)")
    else:
        names = [name.strip() for name in band_names]
        if not all(names):
            raise InputError("--band-names has an empty name")
    if nir_band is not None and len(names) == 3:
        names.append("nir")
    if len(names) != n:
        raise InputError(f"--band-names gives {len(names)} names for {n} channels "
                         f"(3 display bands{' + nir' if nir_band else ''})")
    return names


def _check_options(tile_px: int, workers: int, max_connections: int, min_valid_frac: float,
                   cf: CellsFile) -> None:
    if not 8 <= tile_px <= 4096:
        raise InputError(f"--tile-px {tile_px} is out of range: use 8 to 4096 (default 256)")
    if workers < 1:
        raise InputError("--workers must be at least 1")
    if max_connections < 1:
        raise InputError("--max-connections must be at least 1")
    if not 0.0 < min_valid_frac <= 1.0:
        raise InputError("min_valid_frac must be in (0, 1]")
    if cf.cells.crs is None:
        raise CRSError("cells have no CRS: remake the cells file with `urbangeo grid`")
    if cf.cells["cell_id"].duplicated().any():
        raise InputError("cells have duplicate cell_id values: remake the cells file with "
                         "`urbangeo grid`")
    if len(cf.cells) == 0:
        raise InputError("the cells file has no cells: remake it with `urbangeo grid`")


def _source_resolution_m(sources: Sequence[ChipSource], cf: CellsFile) -> float | None:
    """Coarsest native ground resolution among the sources, at the cells' centre."""
    minx, miny, maxx, maxy = cf.cells.total_bounds
    lon, lat = Transformer.from_crs(cf.cells.crs, "EPSG:4326", always_xy=True).transform(
        (minx + maxx) / 2, (miny + maxy) / 2)
    found = [res for source in sources
             if (res := source.ground_resolution_m(lon, lat)) is not None]
    return max(found) if found else None


def _pixel_size_m(cf: CellsFile, tile_px: int) -> float:
    """Ground size of a chip pixel: web-mercator and degrees are not ground metres."""
    ground = cf.metadata.get("grid", {}).get("ground_cell_size_m")
    if ground:
        return float(ground) / tile_px
    crs = cf.cells.crs
    minx, miny, maxx, maxy = cf.cells.geometry.iloc[0].bounds
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        (minx + maxx) / 2, (miny + maxy) / 2)
    if crs.is_geographic:
        return (maxx - minx) * 111_320.0 * math.cos(math.radians(lat)) / tile_px
    width = (maxx - minx) * crs.axis_info[0].unit_conversion_factor
    if crs.to_epsg() == 3857:
        width *= math.cos(math.radians(lat))
    return width / tile_px


def _no_overlap_message(cf: CellsFile, sources: Sequence[ChipSource]) -> str:
    minx, miny, maxx, maxy = cf.cells.to_crs("EPSG:4326").total_bounds
    labels = ", ".join(Path(s.label).name for s in sources)
    return (f"no cell overlaps the imagery ({labels}); the cells span lon {minx:.4f}..{maxx:.4f}, "
            f"lat {miny:.4f}..{maxy:.4f}: check --imagery covers the cells' area")

