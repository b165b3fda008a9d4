"""Progress reporting that the library emits and the front end renders.

Library code (geo, captions, training) never prints: it calls a :class:`Progress` it was
given. The CLI passes a rich progress bar or a JSON-lines writer (``--progress json``, read by
the QGIS plugin); tests and API users get :data:`SILENT` by default.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Protocol


class Progress(Protocol):
    """What long-running library functions report to."""

    def start(self, stage: str, total: int | None, message: str = "") -> None:
        """Begin a stage of ``total`` work units (``None`` when unknown)."""

    def advance(self, n: int = 1, message: str = "") -> None:
        """Mark ``n`` more units of the current stage done."""

    def info(self, message: str) -> None:
        """Report a one-line fact worth showing (counts, warnings, paths)."""

    def finish(self) -> None:
        """End the current stage."""


class SilentProgress:
    """Discards everything: the default for API calls and tests."""

    def start(self, stage: str, total: int | None, message: str = "") -> None:
        pass

    def advance(self, n: int = 1, message: str = "") -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass


SILENT = SilentProgress()


class JsonLinesProgress:
    """One JSON object a line on a stream: ``{"stage", "fraction", "message", "done", "total"}``.

    Lines are throttled to ~10/s per stage so a million-cell job does not flood a pipe, but the
    first and last line of every stage are always written.
    """

    def __init__(self, stream: IO[str] | None = None, min_interval: float = 0.1) -> None:
        self._stream = stream or sys.stdout
        self._min_interval = min_interval
        self._stage = ""
        self._total: int | None = None
        self._done = 0
        self._last = 0.0

    def _emit(self, kind: str, message: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._min_interval:
            return
        self._last = now
        fraction = None
        if self._total:
            fraction = min(1.0, self._done / self._total)
        record = {"type": kind, "stage": self._stage, "fraction": fraction,
                  "done": self._done, "total": self._total, "message": message}
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()

    def start(self, stage: str, total: int | None, message: str = "") -> None:
        self._stage, self._total, self._done = stage, total, 0
        self._emit("start", message, force=True)

    def advance(self, n: int = 1, message: str = "") -> None:
        self._done += n
        self._emit("progress", message, force=self._total is not None and self._done >= self._total)

    def info(self, message: str) -> None:
        self._emit("info", message, force=True)

    def finish(self) -> None:
        self._emit("finish", force=True)
        self._stage, self._total, self._done = "", None, 0

    def error(self, message: str) -> None:
        """The run failed: one last record, so a reader of stdout learns why."""
        self._emit("error", message, force=True)
