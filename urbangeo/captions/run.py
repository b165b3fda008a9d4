"""Caption every cell that has a chip, resumably: the engine behind ``urbangeo caption``.

Raw captions go to an append-only JSONL cache as each one completes (see
:mod:`urbangeo.captions.cache`), so a killed job loses at most the caption in flight and a rerun
asks the backend only for cells that have no caption under the current backend + model + prompt.
Refinement is cheap and rerun on every cached caption each time, so the refined ``caption``
column always reflects the current rules. A cell whose backend call fails after its retries is
recorded and the job goes on; the caller decides how to report it (the CLI exits non-zero).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbangeo._concurrency import bounded_map
from urbangeo.captions.base import Captioner, ChipInfo
from urbangeo.captions.cache import (
    CacheWriter,
    compact_cache,
    default_cache_path,
    key_hash,
    load_cache,
)
from urbangeo.captions.refine import refine
from urbangeo.errors import DataError, InputError, UrbangeoError
from urbangeo.geo.cells import CellsFile
from urbangeo.geo.chips.store import ChipStore
from urbangeo.progress import SILENT, Progress

ABORT_AFTER_LEADING_FAILURES = 5
"""Stop when this many cells failed before any succeeded: the backend is down or misconfigured,
and failing the remaining thousands of cells one by one would only waste time."""


@dataclass
class CaptionReport:
    """What a caption run did; ``failures`` maps cell ids to the error that stopped them."""

    backend: str
    prompt_hash: str
    cache_path: Path
    n_cells: int = 0
    n_without_chip: int = 0
    n_cached: int = 0
    n_captioned: int = 0
    n_emptied: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    rule_hits: dict[str, int] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        """One line for people: what was captioned, reused, skipped and failed."""
        text = (f"{self.n_captioned} captioned, {self.n_cached} from cache, "
                f"{self.n_without_chip} without chip skipped, {self.n_failed} failed "
                f"(of {self.n_cells} cells; backend {self.backend})")
        if self.n_emptied:
            text += f"; {self.n_emptied} captions emptied by refinement"
        if self.failures:
            text += "; rerun the same command to retry the failed cells"
        return text


def open_chip_store(cells_file: CellsFile, cells_path: str | Path) -> ChipStore:
    """The chip store named in the cells file's ``chips`` metadata (relative to the file)."""
    section = cells_file.metadata.get("chips") or {}
    if not section.get("store"):
        raise InputError(f"{cells_path} has no chips yet: run `urbangeo chips {cells_path} "
                         "--imagery SOURCE` first")
    path = Path(cells_path).parent / section["store"]
    if not path.exists():
        raise InputError(f"chip store {path} named in {cells_path} is missing: "
                         "rerun `urbangeo chips`")
    return ChipStore.open(path)


def caption_cells(
    cells_file: CellsFile,
    cells_path: str | Path,
    captioner: Captioner,
    *,
    refine_options: Mapping[str, Any] | None = None,
    workers: int = 1,
    recaption: bool = False,
    context: Mapping[str, Mapping[str, Any]] | None = None,
    cache_path: str | Path | None = None,
    progress: Progress = SILENT,
) -> tuple[CellsFile, CaptionReport]:
    """Caption the cells of ``cells_file`` that have a chip; return the updated file and a report.

    ``workers`` bounds concurrent backend calls (threads; worth it for remote backends).
    Backends with a ``caption_batch`` method (``hf``) are fed batches instead. ``context``
    maps cell ids to vector-layer facts passed to the backend (part of the cache key, so adding
    or changing a layer recaptions). ``recaption`` ignores cached captions. The cells file is
    not written here: the caller writes it (atomically).
    """
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    store = open_chip_store(cells_file, cells_path)
    key = key_hash(captioner.cache_key() + _context_digest(context) + _store_digest(store))
    report = CaptionReport(backend=captioner.name, prompt_hash=key,
                           cache_path=Path(cache_path or default_cache_path(cells_path)))
    ids = [str(cid) for cid in cells_file.cells["cell_id"]]
    with_chip = _cells_with_chip(cells_file, store)
    report.n_cells, report.n_without_chip = len(ids), len(ids) - len(with_chip)

    cached = {} if recaption else {**_captions_in_file(cells_file, key),
                                   **load_cache(report.cache_path, key)}
    # text that refinement now rejects as junk is captioned again rather than kept
    captions = {cid: text for cid, text in cached.items() if isinstance(_checked(text), str)}
    todo = [cid for cid in with_chip if cid not in captions]
    report.n_cached = len(with_chip) - len(todo)

    def info(cid: str) -> ChipInfo:
        return ChipInfo(cid, tuple(store.band_names), store.ground_resolution_m,
                        (context or {}).get(cid, {}))

    progress.start("caption", len(todo), f"{report.n_cached} cached")
    try:
        stream = _caption_stream(captioner, store, todo, info, workers)
        with CacheWriter(report.cache_path, key) as cache, closing(stream):
            for cid, result in stream:
                if not isinstance(result, UrbangeoError):
                    result = _checked(result)
                if isinstance(result, UrbangeoError):
                    report.failures[cid] = str(result)
                    if not report.n_captioned and report.n_failed >= ABORT_AFTER_LEADING_FAILURES:
                        raise type(result)(f"stopping: the first {report.n_failed} cells all "
                                           f"failed; the last error was: {result}")
                else:
                    captions[cid] = result
                    report.n_captioned += 1
                    cache.append(cid, result)
                progress.advance(1)
    finally:
        progress.finish()
    compact_cache(report.cache_path)
    return _with_captions(cells_file, captioner, captions, set(with_chip), store, report,
                          refine_options), report


def _cells_with_chip(cells_file: CellsFile, store: ChipStore) -> list[str]:
    """Cells flagged ``has_chip`` (when the column exists) whose chip is in the store.

    The flag matters on its own: a rerun of ``urbangeo chips`` with a stricter
    ``--min-valid-frac`` clears it while the old chip stays in the store.
    """
    cells = cells_file.cells
    ids = cells["cell_id"].astype(str)
    if "has_chip" in cells.columns:
        ids = ids[cells["has_chip"].fillna(False).astype(bool).to_numpy()]
    return [cid for cid in ids if cid in store]


def _store_digest(store: ChipStore) -> str:
    """Part of the cache key: chips re-cut from other imagery, bands or sizes are recaptioned."""
    attrs = store.attrs
    identity = {"sources": attrs.get("sources"), "band_names": store.band_names,
                "tile_px": store.tile_px, "ground_resolution_m": store.ground_resolution_m}
    blob = json.dumps(identity, sort_keys=True, default=str).encode("utf-8")
    return "|chips=" + hashlib.sha256(blob).hexdigest()[:16]


def _context_digest(context: Mapping[str, Mapping[str, Any]] | None) -> str:
    """Part of the cache key: captions made with other (or no) vector context are redone."""
    if not context:
        return ""
    blob = json.dumps(context, sort_keys=True, default=str).encode("utf-8")
    return "|context=" + hashlib.sha256(blob).hexdigest()[:16]


def _captions_in_file(cells_file: CellsFile, key: str) -> dict[str, str]:
    """Raw captions already in the GeoPackage under the same key (if the cache file was lost)."""
    cells = cells_file.cells
    if not {"caption_raw", "caption_prompt_hash"} <= set(cells.columns):
        return {}
    same = cells[(cells["caption_prompt_hash"] == key) & cells["caption_raw"].notna()]
    return dict(zip(same["cell_id"].astype(str), same["caption_raw"].astype(str), strict=True))


def _caption_stream(
    captioner: Captioner, store: ChipStore, todo: Sequence[str],
    info: Callable[[str], ChipInfo], workers: int,
) -> Iterator[tuple[str, str | UrbangeoError]]:
    """(cell id, caption or the error that stopped it) as each completes, in any order.

    Chips are read on this thread (the store is not shared between threads) and at most
    ``2 * workers`` are held in memory at once.
    """
    batch = getattr(captioner, "caption_batch", None)
    if batch is not None:
        size = int(getattr(captioner, "batch_size", 8))
        for start in range(0, len(todo), size):
            chunk = list(todo[start:start + size])
            try:
                texts = batch([store.read(cid) for cid in chunk], [info(cid) for cid in chunk])
            except UrbangeoError as exc:
                texts = [exc] * len(chunk)
            yield from zip(chunk, texts, strict=True)
        return

    def one(job: tuple[str, np.ndarray]) -> str | UrbangeoError:
        cid, chip = job
        try:
            return captioner.caption(chip, info(cid))
        except UrbangeoError as exc:  # one cell's failure is its result; the job goes on
            return exc

    # the generator is consumed on this thread, so chips are read here, lazily
    jobs = ((cid, store.read(cid)) for cid in todo)
    with closing(bounded_map(one, jobs, workers, name="caption")) as results:
        for (cid, _), result in results:
            yield cid, result


def _checked(text: str) -> str | UrbangeoError:
    """``text``, or the DataError for an empty caption or binary junk (neither is cached)."""
    if not text.strip():
        return DataError("the backend returned an empty caption; rerun to try again, or try "
                         "another model or prompt")
    try:
        refine(text)
    except DataError as exc:
        return exc
    return text


def _with_captions(cells_file: CellsFile, captioner: Captioner, captions: Mapping[str, str],
                   with_chip: set[str], store: ChipStore, report: CaptionReport,
                   refine_options: Mapping[str, Any] | None) -> CellsFile:
    """A copy of ``cells_file`` with the caption columns and the ``captions`` metadata section."""
    cells = cells_file.cells.copy()
    hits: Counter[str] = Counter()
    raw: list[str | None] = []
    refined: list[str | None] = []
    for cid in cells["cell_id"].astype(str):
        text = captions.get(cid) if cid in with_chip else None
        clean = None
        if text is not None:
            result = refine(text, store.ground_resolution_m, **(refine_options or {}))
            clean = result.text
            hits.update(result.hits)
            report.n_emptied += result.emptied
        raw.append(text)
        refined.append(clean)
    report.rule_hits = dict(sorted(hits.items()))
    have = [text is not None for text in raw]
    cells["caption_raw"] = raw
    cells["caption"] = refined
    cells["caption_backend"] = [captioner.name if ok else None for ok in have]
    cells["caption_prompt_hash"] = [report.prompt_hash if ok else None for ok in have]
    metadata = dict(cells_file.metadata)
    metadata["captions"] = {
        "backend": captioner.name, "model": getattr(captioner, "model", None),
        "cache_key": captioner.cache_key(), "prompt_hash": report.prompt_hash,
        "n_captioned": sum(have), "n_failed": report.n_failed, "n_emptied": report.n_emptied,
        "n_without_chip": report.n_without_chip, "cache": report.cache_path.name,
        "refine": _json_safe(refine_options or {}), "rule_hits": report.rule_hits,
    }
    return CellsFile(cells=cells, metadata=metadata, style_qml=cells_file.style_qml,
                     layer=cells_file.layer)


def _json_safe(options: Mapping[str, Any]) -> dict[str, Any]:
    """Refinement options for the metadata: rule lists by rule name."""
    return {key: [getattr(rule, "name", str(rule)) for rule in value]
            if isinstance(value, list | tuple) else value for key, value in options.items()}
