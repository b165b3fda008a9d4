"""Import open_clip CoCa weights (``coca_ViT-B-32``, ``coca_ViT-L-14``) into UrbanCLIP.

The official UrbanCLIP fine-tunes open_clip's CoCa, so users start from its checkpoints. Our
module names follow open_clip's; the differences are mechanical: ``transformer.resblocks`` ->
``blocks`` and nn.MultiheadAttention's packed ``in_proj`` -> separate q/k/v projections.
This module never imports open_clip: it works on plain state dicts and checkpoint files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from urbangeo.errors import ModelError
from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.io import build_with_weights
from urbangeo.model.urbanclip import UrbanCLIP

_RENAMES = (
    (re.compile(r"^visual\.transformer\.resblocks\."), "visual.blocks."),
    (re.compile(r"^text\.transformer\.resblocks\."), "text.blocks."),
)


def config_from_openclip(model_cfg: Mapping[str, Any], **overrides: Any) -> UrbanCLIPConfig:
    """Our config for an open_clip CoCa model config (its ``model_configs/*.json`` content)."""
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    mm = model_cfg["multimodal_cfg"]
    unsupported = [k for k in ("timm_model_name", "hf_model_name", "ls_init_value")
                   if vision.get(k) or text.get(k) or mm.get(k)]
    if (vision.get("attentional_pool") not in (True, "parallel") or not text.get("embed_cls")
            or unsupported):
        raise ModelError("only open_clip CoCa models with a ViT, an attentional pooler and a CLS "
                         f"text tower import (unsupported: {unsupported or 'pooling/CLS'})")
    if mm.get("width", 512) != text.get("width", 512) or mm.get("heads", 8) != text.get("heads", 8):
        raise ModelError("the CoCa multimodal decoder must have the text tower's width and heads")
    values = dict(
        image_size=vision.get("image_size", 224), patch_size=vision.get("patch_size", 16),
        vision_width=vision.get("width", 768), vision_layers=vision.get("layers", 12),
        vision_heads=vision.get("width", 768) // vision.get("head_width", 64),
        mlp_ratio=vision.get("mlp_ratio", 4.0), embed_dim=model_cfg["embed_dim"],
        pooler_mode="dual" if vision.get("attentional_pool") == "parallel" else "single",
        n_queries=vision.get("attn_pooler_queries", 256),
        pooler_heads=vision.get("attn_pooler_heads", 8),
        vocab_size=text.get("vocab_size", 49408), context_length=text.get("context_length", 77),
        text_width=text.get("width", 512), text_heads=text.get("heads", 8),
        text_layers=text.get("layers", 12), multimodal_layers=mm.get("layers", 12),
        cls_mask="legacy", pad_id=text.get("pad_id", 0), bos_id=49406, eos_id=49407,
    )
    return UrbanCLIPConfig(**{**values, **overrides})


def _split_attention(prefix: str, sd: dict[str, Tensor], out: dict[str, Tensor]) -> None:
    """nn.MultiheadAttention at ``prefix`` -> our q/k/v/out projections."""
    if f"{prefix}in_proj_weight" in sd:
        weights = sd.pop(f"{prefix}in_proj_weight").chunk(3)
    else:  # kdim != embed_dim: separate projection weights
        weights = [sd.pop(f"{prefix}{n}_proj_weight") for n in "qkv"]
    biases = sd.pop(f"{prefix}in_proj_bias").chunk(3)
    for name, w, b in zip("qkv", weights, biases, strict=True):
        out[f"{prefix}{name}_proj.weight"], out[f"{prefix}{name}_proj.bias"] = w, b


def convert_openclip_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An open_clip CoCa state dict with our parameter names (values are not copied)."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    sd.pop("text.attn_mask", None)
    sd.pop("text_decoder.attn_mask", None)
    out: dict[str, Tensor] = {}
    for prefix in [k.removesuffix("in_proj_bias") for k in sd if k.endswith(".in_proj_bias")]:
        _split_attention(prefix, sd, out)
    out.update(sd)
    renamed = {}
    for key, value in out.items():
        for pattern, new in _RENAMES:
            key = pattern.sub(new, key)
        renamed[key] = value
    return renamed


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or torch checkpoint file, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; give the path of an open_clip "
                         ".pt/.bin/.safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read checkpoint {path}: {exc}. Is it a complete open_clip "
                         "checkpoint?") from exc
    if isinstance(data, Mapping) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise ModelError(f"checkpoint {path} does not hold a state dict")
    return dict(data)


def load_openclip_coca(source: str | Path | Mapping[str, Tensor],
                       config: UrbanCLIPConfig | str) -> UrbanCLIP:
    """UrbanCLIP with open_clip CoCa weights; ``config`` is a config or a ``coca_*`` preset.

    Every tensor must find its place with the right shape, or ModelError lists what differs.
    """
    if isinstance(config, str):
        config = UrbanCLIPConfig.from_preset(config)
    state = read_checkpoint(source) if isinstance(source, str | Path) else source
    converted = convert_openclip_state_dict(state)
    return build_with_weights(config, converted, source="the open_clip checkpoint")
