"""Frozen image embeddings of cells (paper §3.3, predict stage), cached so a killed run resumes.

The cache is keyed by everything that changes a vector: the model's weights and architecture
and the chip store's identity (imagery, bands, tile size, stretch). Another model, or chips
re-cut from other imagery, gets its own cache entry, so stale vectors are never reused.

Layout of one entry, ``<cache>/<key>/``: ``meta.json`` (what the key stands for), ``vectors.f32``
(float32 rows, appended) and ``ids.txt`` (one cell id a line, appended). Each batch's vectors
are written before its ids, so the ids double as the "done" flag: a run killed at any instant
leaves at most one batch of vectors without ids, which the next run cuts off and recomputes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from urbangeo._atomic import write_text_atomic
from urbangeo.errors import InputError, ModelError
from urbangeo.learn.data import CellData, to_model_input
from urbangeo.progress import SILENT, Progress

CACHE_FORMAT = "urbangeo-embeddings/1"
_HASH_BLOCK = 1 << 20


def default_cache(cells_path: Path) -> Path:
    """Where predict keeps embeddings: ``<cells stem>.embeddings/`` beside the cells file."""
    return cells_path.with_name(cells_path.stem + ".embeddings")


def model_sha256(model_dir: Path) -> str:
    """sha256 of the model's weights file: the model's identity in caches and metadata."""
    from urbangeo.model.io import WEIGHTS_NAME, read_model_config

    read_model_config(model_dir)  # ModelError for a missing or foreign directory
    weights = Path(model_dir) / WEIGHTS_NAME
    try:
        stat = weights.stat()
    except FileNotFoundError:
        raise ModelError(f"{model_dir} has no {WEIGHTS_NAME}; the model was not saved "
                         "completely: train it again") from None
    return _file_sha256(str(weights.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """Hashed once per file version: predict and evaluate ask for the same model's identity
    several times, and a large model's weights take seconds to read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class _EmbeddingCache:
    """One cache entry: the vectors already computed for one (model, chip store) pair."""

    def __init__(self, root: Path, key: dict[str, Any], dim: int) -> None:
        blob = json.dumps(key, sort_keys=True, default=str).encode("utf-8")
        self.dir = root / hashlib.sha256(blob).hexdigest()[:24]
        self.dim = dim
        self._vectors = self.dir / "vectors.f32"
        self._ids = self.dir / "ids.txt"
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "meta.json").exists():
            write_text_atomic(self.dir / "meta.json",
                              json.dumps({**key, "dim": dim}, sort_keys=True, default=str))

    def load(self) -> tuple[list[str], np.ndarray]:
        """The complete (id, vector) pairs, and trims whatever a killed run left half-written."""
        raw = self._ids.read_bytes() if self._ids.exists() else b""
        complete = raw[: raw.rfind(b"\n") + 1]
        ids = complete.decode("utf-8").splitlines()
        row_bytes = 4 * self.dim
        n_rows = self._vectors.stat().st_size // row_bytes if self._vectors.exists() else 0
        n = min(len(ids), n_rows)
        ids = ids[:n]
        with self._ids.open("ab") as f:
            f.truncate(len("".join(i + "\n" for i in ids).encode("utf-8")))
        with self._vectors.open("ab") as f:
            f.truncate(n * row_bytes)
        vectors = np.fromfile(self._vectors, dtype=np.float32, count=n * self.dim)
        return ids, vectors.reshape(n, self.dim)

    def append(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Vectors first, ids last: an id on disk means its vector is complete."""
        with self._vectors.open("ab") as f:
            f.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        with self._ids.open("ab") as f:
            f.write("".join(i + "\n" for i in ids).encode("utf-8"))


def embed_cells(model_dir: str | Path, data: CellData, *, batch_size: int = 64,
                device: str = "auto", cache: Path | None = None,
                progress: Progress = SILENT) -> np.ndarray:
    """The frozen image encoder's contrastive embedding of every cell in ``data``.

    Returns ``(len(data), embed_dim)`` float32, L2-normalised rows in ``data`` order. With
    ``cache``, finished batches are saved as they come and only missing cells are embedded.
    """
    import torch

    from urbangeo.learn.device import resolve_device
    from urbangeo.model.io import load_model

    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    model_dir = Path(model_dir)
    torch_device = resolve_device(device)
    loaded = load_model(model_dir, device=torch_device)
    model, config = loaded.model, loaded.model.config
    out = np.zeros((len(data), config.embed_dim), dtype=np.float32)
    todo = np.arange(len(data))
    store = None
    if cache is not None:
        key = {"format": CACHE_FORMAT, "model_sha256": model_sha256(model_dir),
               "architecture": config.to_dict(), "chips": data.store.attrs}
        store = _EmbeddingCache(Path(cache), key, config.embed_dim)
        ids, vectors = store.load()
        row_of = {cid: i for i, cid in enumerate(ids)}
        cached = np.array([cid in row_of for cid in data.cell_ids], dtype=bool)
        if cached.any():
            out[cached] = vectors[[row_of[data.cell_ids[i]] for i in np.flatnonzero(cached)]]
        todo = np.flatnonzero(~cached)
        if cached.any():
            progress.info(f"embed: {int(cached.sum())} of {len(data)} cells already in "
                          f"{store.dir}")
    progress.start("embed", len(todo))
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            x = to_model_input(data.images(batch), config.image_size).to(torch_device)
            emb = model.encode_image(model.normalize_pixels(x)).float().cpu().numpy()
            out[batch] = emb
            if store is not None:
                store.append([data.cell_ids[i] for i in batch], emb)
            progress.advance(len(batch))
    progress.finish()
    return out
