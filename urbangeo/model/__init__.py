"""UrbanCLIP network: pure PyTorch, knows nothing of files' geography, CRSs or the CLI.

Names are resolved lazily (PEP 562) so that importing a torch-free submodule such as
:mod:`urbangeo.model.tokenizer` does not pull torch in.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UrbanCLIP": "urbangeo.model.urbanclip",
    "UrbanCLIPConfig": "urbangeo.model.config",
    "save_model": "urbangeo.model.io",
    "load_model": "urbangeo.model.io",
    "LoadedModel": "urbangeo.model.io",
    "load_openclip_coca": "urbangeo.model.openclip_import",
    "attention": "urbangeo.model.attention",
    "UrbanTokenizer": "urbangeo.model.tokenizer",
    "train_bpe": "urbangeo.model.tokenizer",
    "clip_tokenizer": "urbangeo.model.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'urbangeo.model' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
