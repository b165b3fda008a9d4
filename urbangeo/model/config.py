"""UrbanCLIP architecture as one JSON-safe dataclass, with named presets.

The config travels inside every saved model directory (``config.json``), so it holds everything
needed to rebuild the network and to feed it: sizes, pooling mode, special token ids and the
pixel normalisation the weights were trained with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from urbangeo.errors import ModelError
from urbangeo.model.tokenizer import padding_after_first_eos

if TYPE_CHECKING:
    import numpy as np
    import torch

    TokenIds: TypeAlias = torch.Tensor | np.ndarray

#: open_clip / OpenAI CLIP pixel statistics (the CoCa weights expect them).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Sizes, widths, layer, head and length counts: each must be an ``int`` >= 1.
POSITIVE_INT_FIELDS = ("image_size", "patch_size", "vision_width", "vision_layers",
                       "vision_heads", "embed_dim", "n_queries", "pooler_heads", "vocab_size",
                       "context_length", "text_width", "text_heads", "text_layers",
                       "multimodal_layers")
TOKEN_ID_FIELDS = ("pad_id", "bos_id", "eos_id")

POOLER_MODES = ("dual", "single")
CLS_MASKS = ("correct", "legacy")


@dataclass
class UrbanCLIPConfig:
    """Sizes and conventions of one UrbanCLIP network.

    ``pooler_mode``: ``"dual"`` is the paper's design (LayerNorm on the ViT tokens, then a
    1-query contrastive pooler and an ``n_queries`` generative pooler, open_clip's "parallel"
    mode); ``"single"`` mirrors open_clip's released CoCa (one ``n_queries`` pooler whose first
    output is the contrastive embedding and the other ``n_queries - 1`` feed the decoder).

    ``cls_mask``: the text tower appends a CLS token after the padded sequence. ``"correct"``
    masks the padding keys, padding being every position after the first ``eos_id`` (as
    :meth:`UrbanTokenizer.padding_mask` finds it: the CLIP vocabulary pads with id 0, which is
    also the token ``!``). ``"legacy"`` reproduces open_clip CoCa, which its pretrained weights
    learnt with: every ``pad_id`` is padding (``!`` included) and the key mask is off by one
    (key ``j`` masked when token ``j - 1`` is padding). See :meth:`padding_mask`.

    ``text_layers`` unimodal layers give the text embedding; ``multimodal_layers`` more layers
    (self-attention, then cross-attention to the generative pooler outputs) predict tokens.
    """

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    mlp_ratio: float = 4.0
    embed_dim: int = 512
    pooler_mode: str = "dual"
    n_queries: int = 256
    pooler_heads: int = 8
    vocab_size: int = 49408
    context_length: int = 77
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 6
    multimodal_layers: int = 6
    cls_mask: str = "correct"
    pad_id: int = 0
    bos_id: int = 49406
    eos_id: int = 49407
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100.0)
    lambda_con: float = 1.0
    lambda_lm: float = 1.0
    layer_norm_eps: float = 1e-5
    preset: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(x) for x in self.image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(x) for x in self.image_std)  # type: ignore[assignment]
        self.validate()

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_image_tokens(self) -> int:
        """How many image tokens the multimodal decoder cross-attends to."""
        return self.n_queries - 1 if self.pooler_mode == "single" else self.n_queries

    def padding_mask(self, tokens: TokenIds) -> TokenIds:
        """True where ``tokens`` (..., L) are padding: the rule text tower, loss and decoding share.

        ``"correct"``: every position after the first ``eos_id`` of its row, whatever its id, so
        a real token sharing the pad id (CLIP's ``!``) is text. ``"legacy"``: ``tokens ==
        pad_id``, open_clip CoCa's rule, kept bit for bit for its pretrained weights. Works on
        torch tensors and numpy arrays alike.
        """
        if self.cls_mask == "legacy":
            return tokens == self.pad_id
        return padding_after_first_eos(tokens, self.eos_id)

    def validate(self) -> None:
        """Raise ModelError naming the inconsistent fields (configs come from user files).

        Counts are checked to be positive ints first, so a hand-edited ``config.json`` (a zero
        patch size, a float width) gets this one-line error instead of a ZeroDivisionError or a
        network that fails to build later.
        """
        bad = [f"{name} {value!r}" for name in POSITIVE_INT_FIELDS
               if not _is_positive_int(value := getattr(self, name))]
        bad += [f"{name} {value!r}" for name in TOKEN_ID_FIELDS
                if not (_is_int(value := getattr(self, name)) and value >= 0)]
        if bad:
            raise ModelError("invalid UrbanCLIP config: " + ", ".join(bad) + " must be "
                             "positive integers (token ids non-negative integers). Fix "
                             "config.json or pick a preset.")
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size "
                            f"{self.patch_size}")
        for width, heads, name in ((self.vision_width, self.vision_heads, "vision"),
                                   (self.text_width, self.text_heads, "text"),
                                   (self.embed_dim, self.pooler_heads, "pooler")):
            if width % heads:
                problems.append(f"{name} width {width} is not divisible by {heads} heads")
        if self.pooler_mode not in POOLER_MODES:
            problems.append(f"pooler_mode {self.pooler_mode!r} is not one of {POOLER_MODES}")
        if self.cls_mask not in CLS_MASKS:
            problems.append(f"cls_mask {self.cls_mask!r} is not one of {CLS_MASKS}")
        if self.n_queries < (2 if self.pooler_mode == "single" else 1):
            problems.append(f"n_queries {self.n_queries} is too small for pooler_mode "
                            f"{self.pooler_mode!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                problems.append(f"{name} {getattr(self, name)} is outside the vocabulary "
                                f"(size {self.vocab_size})")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            problems.append("image_mean and image_std need three values (std > 0)")
        if problems:
            raise ModelError("invalid UrbanCLIP config: " + "; ".join(problems)
                             + ". Fix config.json or pick a preset.")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_mean"] = list(self.image_mean)
        out["image_std"] = list(self.image_std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UrbanCLIPConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"model config has unknown fields {unknown}; it was written by a "
                             "newer urbangeo or edited by hand. Upgrade urbangeo or remove them.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelError(f"model config is malformed ({exc}); re-save the model.") from exc

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> UrbanCLIPConfig:
        """A named preset (see :data:`PRESETS`), with any field overridden."""
        if name not in PRESETS:
            raise ModelError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})


def _is_int(value: object) -> bool:
    """A real int: JSON ``true`` and ``64.0`` are not sizes."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value: object) -> bool:
    return _is_int(value) and value >= 1  # type: ignore[operator]


_COCA = dict(pooler_mode="single", n_queries=256, pooler_heads=8, vocab_size=49408,
             context_length=76, cls_mask="legacy", pad_id=0, bos_id=49406, eos_id=49407,
             image_size=224)

#: Preset name -> field values. ``coca_*`` mirror open_clip's model_configs so weights import.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and demos: seconds per step on small chips; vocab fits a small trained BPE.
    "tiny": dict(image_size=64, patch_size=16, vision_width=64, vision_layers=2, vision_heads=2,
                 embed_dim=64, n_queries=16, pooler_heads=2, vocab_size=1024, context_length=77,
                 text_width=64, text_heads=2, text_layers=1, multimodal_layers=1,
                 pad_id=0, bos_id=1, eos_id=2),
    "small": dict(image_size=224, patch_size=16, vision_width=384, vision_layers=12,
                  vision_heads=6, embed_dim=384, pooler_heads=6, text_width=384, text_heads=6,
                  text_layers=6, multimodal_layers=6),
    "base": dict(image_size=224, patch_size=16, vision_width=768, vision_layers=12,
                 vision_heads=12, embed_dim=512, pooler_heads=8, text_width=512, text_heads=8,
                 text_layers=6, multimodal_layers=6),
    "coca_vit_b32": dict(_COCA, patch_size=32, vision_width=768, vision_layers=12,
                         vision_heads=12, embed_dim=512, text_width=512, text_heads=8,
                         text_layers=12, multimodal_layers=12),
    "coca_vit_l14": dict(_COCA, patch_size=14, vision_width=1024, vision_layers=24,
                         vision_heads=16, embed_dim=768, text_width=768, text_heads=12,
                         text_layers=12, multimodal_layers=12),
}
