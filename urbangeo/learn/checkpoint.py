"""The work directory of an unfinished training run (``MODEL_DIR.partial/``), so a run that is
killed, even by SIGKILL, continues where it stopped when the same command is run again.

Layout::

    MODEL_DIR.partial/
      run.json                 what the run is (options + data fingerprint), written last at start
      tokenizer/               the run's tokenizer (tokenizer.json, tokenizer_config.json)
      step-000000042/          one complete checkpoint, renamed into place atomically
        model.safetensors      current weights
        best.safetensors       weights of the best epoch so far (absent before the first epoch)
        state.pt               optimizer, scheduler, grad scaler, counters, log (tensors and
                               plain values only: read back with ``weights_only=True``)

A new checkpoint gets a new name and older ones are deleted only once it is in place, so a kill
at any moment leaves at least one complete checkpoint (or none yet, and the run restarts).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from urbangeo._atomic import atomic_path, write_text_atomic
from urbangeo.errors import InputError, ModelError
from urbangeo.model.tokenizer import UrbanTokenizer

RUN_FILE = "run.json"
TOKENIZER_DIR = "tokenizer"
WEIGHTS, BEST, STATE = "model.safetensors", "best.safetensors", "state.pt"
_PREFIX = "step-"


def partial_dir(model_dir: Path) -> Path:
    """Where the unfinished run of ``model_dir`` keeps its checkpoints."""
    return model_dir.with_name(model_dir.name + ".partial")


@dataclass
class Checkpoint:
    """One saved moment of a run: weights, best weights so far, and the training state."""

    step: int
    weights: dict[str, Tensor]
    best: dict[str, Tensor] | None
    state: dict[str, Any]


class WorkDir:
    """Checkpoints and tokenizer of one unfinished run; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._best_written: tuple[dict[str, Tensor], Path] | None = None  # (weights, file)

    def begin(self, identity: dict[str, Any], *, overwrite: bool) -> bool:
        """True when an unfinished run with this identity exists (resume it).

        A run with another identity is refused (``InputError``), or discarded with
        ``overwrite``. A directory without ``run.json`` never got started and is discarded.
        """
        identity = json.loads(json.dumps(identity))  # compare as stored (tuples -> lists)
        stored = self._stored_identity()
        if stored == identity:
            return True
        if stored is not None and not overwrite:
            changed = sorted(k for k in {*stored, *identity} if stored.get(k) != identity.get(k))
            details = ", ".join(_describe_change(k, stored.get(k), identity.get(k))
                                for k in changed)
            raise InputError(f"{self.path} holds an unfinished training run with other "
                             f"settings ({details}): rerun with the same options to resume it, "
                             "or pass --overwrite to discard it and start over")
        self.remove()
        self.path.mkdir(parents=True)
        return False

    def mark_started(self, identity: dict[str, Any]) -> None:
        """Record the run's identity: from now on a rerun resumes instead of starting over."""
        write_text_atomic(self.path / RUN_FILE, json.dumps(identity, indent=2) + "\n")

    def _stored_identity(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save_tokenizer(self, tokenizer: UrbanTokenizer) -> None:
        tokenizer.save(self.path / TOKENIZER_DIR)

    def load_tokenizer(self) -> UrbanTokenizer:
        return UrbanTokenizer.load(self.path / TOKENIZER_DIR)

    def save(self, step: int, weights: dict[str, Tensor], best: dict[str, Tensor] | None,
             state: dict[str, Any]) -> Path:
        """Write a complete checkpoint for ``step``, then delete the older ones."""
        from safetensors.torch import save_file

        target = self.path / f"{_PREFIX}{step:09d}"
        with atomic_path(target, suffix="") as tmp:
            tmp.mkdir()
            save_file(_plain(weights), str(tmp / WEIGHTS))
            if best is not None:
                self._write_best(best, tmp / BEST, target / BEST)
            torch.save(state, tmp / STATE)
        for older in self._checkpoints():
            if older != target:
                shutil.rmtree(older, ignore_errors=True)
        return target

    def _write_best(self, best: dict[str, Tensor], tmp: Path, final: Path) -> None:
        """Hard-link the previous checkpoint's best weights when they did not change (best
        weights change once an epoch at most; checkpoints come every few hundred steps)."""
        from safetensors.torch import save_file

        if self._best_written and self._best_written[0] is best:
            try:
                os.link(self._best_written[1], tmp)
            except OSError:  # no hard links here, or the file is gone: write it again
                save_file(_plain(best), str(tmp))
        else:
            save_file(_plain(best), str(tmp))
        self._best_written = (best, final)

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None before the first one."""
        found = self._checkpoints()
        if not found:
            return None
        path = found[-1]
        from safetensors.torch import load_file

        try:
            state = torch.load(path / STATE, map_location="cpu", weights_only=True)
            weights = load_file(str(path / WEIGHTS))
            best = load_file(str(path / BEST)) if (path / BEST).is_file() else None
        except Exception as exc:  # safetensors and torch raise assorted errors on bad files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            # --overwrite resumes a run with the same options, so only deleting discards it.
            raise ModelError(f"checkpoint {path} is unreadable ({reason}); delete {self.path} "
                             "to discard the unfinished run and start over") from exc
        return Checkpoint(int(path.name.removeprefix(_PREFIX)), weights, best, state)

    def _checkpoints(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir()
                      if p.is_dir() and p.name.startswith(_PREFIX)
                      and p.name.removeprefix(_PREFIX).isdigit())

    def remove(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)


def _plain(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in weights.items()}


def _describe_change(key: str, before: Any, now: Any) -> str:
    if isinstance(before, dict) and isinstance(now, dict):
        inner = sorted(k for k in {*before, *now} if before.get(k) != now.get(k))
        return "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in inner)
    return f"{key}: {before!r} -> {now!r}"
