"""What a pretraining run is asked to do, torch-free so the CLI can show the defaults cheaply.

The options double as the identity of a run: an unfinished run resumes only with the same
:meth:`TrainOptions.identity`, so changing anything that changes the weights (the learning rate,
the epochs, the seed...) cannot silently continue a different run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbangeo.errors import InputError
from urbangeo.model.config import PRESETS

CAPTION_COLUMNS = ("caption", "caption_raw")
MIN_CELLS = 8
"""Fewer captioned cells than this cannot give a contrastive batch and a validation split."""

RUN_ONLY_FIELDS = ("device", "checkpoint_every")
"""Options that change how a run goes but not its weights: they may differ on resume."""


@dataclass(frozen=True)
class TrainOptions:
    """Options of one UrbanCLIP pretraining run (paper §3-4; defaults from its code).

    ``warmup`` is a fraction of all steps (linear warm-up, then cosine decay to zero).
    ``caption_column="caption_raw"`` trains on the unrefined captions (the paper's "w/o refined
    text" ablation); ``lambda_con=0`` or ``lambda_lm=0`` drop one objective (Fig. 4).
    ``init_from`` is an open_clip CoCa checkpoint (needs a ``coca_*`` preset and uses CLIP's
    tokenizer); ``tokenizer`` a directory holding a saved UrbanTokenizer; without either a
    byte-level BPE is trained on the captions. ``image_size`` overrides the preset's.
    """

    preset: str = "small"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: float = 0.1
    lambda_con: float = 1.0
    lambda_lm: float = 1.0
    caption_column: str = "caption"
    val_frac: float = 0.1
    seed: int = 0
    device: str = "auto"
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    init_from: str | None = None
    tokenizer: str | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("init_from", "tokenizer"):  # absolute, so a resume from elsewhere matches
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(Path(value).expanduser().resolve()))

    def validate(self) -> None:
        """Raise InputError naming every option out of range, before any work is done."""
        problems = []
        for name in ("epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.batch_size < 2:
            problems.append(f"batch_size must be at least 2 for a contrastive loss "
                            f"(got {self.batch_size})")
        if not self.lr > 0 or self.weight_decay < 0 or not self.grad_clip > 0:
            problems.append("lr and grad_clip must be positive and weight_decay not negative")
        if not 0 <= self.warmup < 1 or not 0 <= self.val_frac < 0.5:
            problems.append(f"warmup must be in [0, 1) (got {self.warmup}) and val_frac in "
                            f"[0, 0.5) (got {self.val_frac})")
        if self.lambda_con < 0 or self.lambda_lm < 0 or self.lambda_con + self.lambda_lm == 0:
            problems.append("lambda_con and lambda_lm must not be negative nor both zero")
        if self.caption_column not in CAPTION_COLUMNS:
            problems.append(f"caption_column must be one of {CAPTION_COLUMNS} "
                            f"(got {self.caption_column!r})")
        if self.image_size is not None and self.image_size < 1:
            problems.append(f"image_size must be positive (got {self.image_size})")
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {sorted(PRESETS)} (got {self.preset!r})")
        if self.init_from and self.tokenizer:
            problems.append("init_from uses CLIP's tokenizer: drop the tokenizer option")
        if self.init_from and not self.preset.startswith("coca_"):
            problems.append(f"init_from needs the matching open_clip preset (coca_vit_b32 or "
                            f"coca_vit_l14), not {self.preset!r}")
        if problems:
            raise InputError("invalid training options: " + "; ".join(problems))

    def identity(self) -> dict[str, Any]:
        """The options that decide the weights (a resume must match them exactly)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
