"""An append-only JSONL cache of raw captions, so a killed or failed caption job resumes.

One line per caption: ``{"cell_id": ..., "key": ..., "caption": ...}`` where ``key`` is the
short hash of the backend's :meth:`~urbangeo.captions.base.Captioner.cache_key` (backend, model
and prompt). Appending a line and flushing it is all a write does, so a job killed at any moment
loses at most the line being written; that torn last line, or any other line that does not parse,
is ignored on the next read. The last line for a ``(cell_id, key)`` wins.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO

from urbangeo._atomic import write_text_atomic


def key_hash(cache_key: str) -> str:
    """Short, stable identity of a cache key (what the GeoPackage stores as the prompt hash)."""
    return hashlib.sha256(cache_key.encode("utf-8")).hexdigest()[:16]


def default_cache_path(cells_path: str | os.PathLike[str]) -> Path:
    """``<cells stem>.captions.jsonl`` beside the cells file."""
    cells_path = Path(cells_path)
    return cells_path.with_name(f"{cells_path.stem}.captions.jsonl")


def _records(path: Path) -> dict[tuple[str, str], str]:
    """Every well-formed record, the last line per ``(cell_id, key)`` winning."""
    found: dict[tuple[str, str], str] = {}
    if not path.exists():
        return found
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(record, dict) and isinstance(record.get("key"), str)
                and isinstance(record.get("cell_id"), str)
                and isinstance(record.get("caption"), str)
            ):
                found[record["cell_id"], record["key"]] = record["caption"]
    return found


def load_cache(path: str | os.PathLike[str], key: str) -> dict[str, str]:
    """Cached raw captions for ``key`` (a :func:`key_hash`), by cell id; ``{}`` if no file."""
    return {cid: text for (cid, k), text in _records(Path(path)).items() if k == key}


def compact_cache(path: str | os.PathLike[str]) -> None:
    """Rewrite the cache atomically with one line per ``(cell_id, key)``, dropping superseded
    and torn lines, so recaptioning does not grow the file without bound."""
    path = Path(path)
    if not path.exists():
        return
    lines = [json.dumps({"cell_id": cid, "key": key, "caption": text}, ensure_ascii=False)
             for (cid, key), text in _records(path).items()]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


class CacheWriter:
    """Appends captions to the cache file; flushes every line, fsyncs every ``sync_every``.

    Flushing hands each line to the operating system, which keeps it even if the process is
    killed; the periodic fsync bounds what a power cut can lose without paying a disk sync per
    caption.
    """

    def __init__(self, path: str | os.PathLike[str], key: str, *, sync_every: int = 16) -> None:
        self.path = Path(path)
        self._key = key
        self._sync_every = max(1, sync_every)
        self._pending = 0
        self._fh: IO[str] | None = None

    def __enter__(self) -> CacheWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = self.path.exists() and not _ends_with_newline(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        if needs_newline:  # a torn last line must not swallow the next record
            self._fh.write("\n")
        return self

    def append(self, cell_id: str, caption: str) -> None:
        """Record one raw caption."""
        if self._fh is None:
            raise RuntimeError("CacheWriter.append outside its `with` block")
        self._fh.write(json.dumps({"cell_id": cell_id, "key": self._key, "caption": caption},
                                  ensure_ascii=False) + "\n")
        self._fh.flush()
        self._pending += 1
        if self._pending >= self._sync_every:
            self.sync()

    def sync(self) -> None:
        """Force everything appended so far onto the disk."""
        if self._fh is not None and self._pending:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._pending = 0

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None


def _ends_with_newline(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
