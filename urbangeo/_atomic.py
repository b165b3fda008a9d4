"""Atomic file and directory writes: a crash or Ctrl-C never leaves a half-written output.

Write to a temporary sibling (same directory, so the final ``os.replace`` is a rename on one
file system), then rename over the destination only once the write has fully succeeded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    The temporary name keeps ``dest``'s suffix (GDAL picks drivers by extension). On any
    exception the temporary file or directory is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.stem}.", suffix=suffix if suffix is not None else dest.suffix,
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers (GDAL, sqlite) want to create the file themselves
    try:
        yield tmp
        if tmp.is_dir() and dest.is_dir():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``dest`` atomically (UTF-8)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
