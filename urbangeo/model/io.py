"""Model directories: ``config.json`` + ``model.safetensors``, the model's own contract.

``config.json`` holds the architecture (sizes, image size, pixel normalisation, special token
ids), the tokenizer description and free-form extras (indicator names, units, ...). Weights are
safetensors, so loading never unpickles anything. The directory is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from urbangeo._atomic import atomic_path
from urbangeo.errors import ModelError
from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.urbanclip import UrbanCLIP

FORMAT = "urbangeo-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class LoadedModel:
    """A model read back from its directory, with what was saved beside it."""

    model: UrbanCLIP
    path: Path
    tokenizer: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def save_model(directory: str | Path, model: UrbanCLIP, *,
               tokenizer: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None,
               files: Mapping[str, str | bytes] | None = None) -> Path:
    """Write ``model`` to ``directory`` (replaced as a whole, atomically).

    ``tokenizer``: JSON description (e.g. ``{"kind": "bpe", "file": "tokenizer.json"}``);
    ``files``: extra files to place in the directory (e.g. the tokenizer JSON itself).
    """
    directory = Path(directory)
    bad = [name for name in files or {} if Path(name).name != name or name in (CONFIG_NAME,
                                                                              WEIGHTS_NAME)]
    if bad:
        raise ModelError(f"extra model files must be plain names other than {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME}, got {bad}")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "architecture": model.config.to_dict(), "tokenizer": dict(tokenizer or {}),
            "extra": dict(extra or {})}
    text = json.dumps(meta, indent=2, ensure_ascii=False)  # fails early on non-JSON extras
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory, suffix="") as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        for name, content in (files or {}).items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
    return directory


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory, checked for format and version."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist; train a model first or "
                         "check the path")
    path = directory / CONFIG_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{directory} is not a model directory (no {CONFIG_NAME})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is corrupt ({exc}); re-save or re-train the model") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not an urbangeo model config (format is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has format version {meta.get('format_version')!r}; this "
                         f"urbangeo reads version {FORMAT_VERSION}. Upgrade urbangeo.")
    if not isinstance(meta.get("architecture"), dict):
        raise ModelError(f"{path} has no architecture section; re-save the model")
    return meta


def load_model(directory: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of ``directory`` in eval mode; ModelError on anything inconsistent."""
    directory = Path(directory)
    meta = read_model_config(directory)
    config = UrbanCLIPConfig.from_dict(meta["architecture"])
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelError(f"{directory} has no {WEIGHTS_NAME}; the model was not saved completely")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights} is corrupt ({exc}); re-save or re-train the model") from exc
    model = build_with_weights(config, state, source=str(weights))
    return LoadedModel(model=model.to(device).eval(), path=directory,
                       tokenizer=meta.get("tokenizer") or {}, extra=meta.get("extra") or {})


def build_with_weights(config: UrbanCLIPConfig, state: Mapping[str, Tensor],
                       source: str) -> UrbanCLIP:
    """The model for ``config`` holding a copy of ``state``, skipping the random init."""
    with torch.device("meta"):
        model = UrbanCLIP(config)
    check_state_dict(model, state, source)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state)
    return model


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise ModelError when ``state`` does not fit ``model`` key for key and shape for shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{label}: {items[:5]}{' ...' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected),
                                      ("wrong shape", wrong)) if items]
        raise ModelError(f"weights of {source} do not fit the model architecture ("
                         + "; ".join(parts) + "). Use the matching preset/config.")
