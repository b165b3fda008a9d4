"""open_clip CoCa weights import into UrbanCLIP and give the same numbers (float32, CPU).

open_clip's CoCa is built with random weights inside the test: nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from urbangeo.errors import ModelError
from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.io import check_state_dict
from urbangeo.model.openclip_import import (
    config_from_openclip,
    convert_openclip_state_dict,
    load_openclip_coca,
)
from urbangeo.model.urbanclip import UrbanCLIP

open_clip = pytest.importorskip("open_clip")
from open_clip.coca_model import CoCa  # noqa: E402

CAPTIONS = ["dense residential blocks with narrow streets", "farmland along a river", "port"]


def small_cfg(attentional_pool: bool | str = True) -> dict:
    # open_clip's "parallel" pooling applies an embed_dim LayerNorm to the ViT tokens, so it
    # only runs when the ViT width equals embed_dim; the released "single" mode has no such limit.
    width = 32 if attentional_pool == "parallel" else 48
    return dict(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=width, layers=2, head_width=16,
                        attentional_pool=attentional_pool, attn_pooler_heads=4,
                        attn_pooler_queries=9, output_tokens=True),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=2,
                      embed_cls=True, output_tokens=True),
        multimodal_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=2),
    )


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Fill every parameter (LayerNorms included) so a mis-mapped tensor cannot hide."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight")) else 0.0
            p.copy_(base + torch.randn_like(p) * (0.2 if p.ndim > 1 else 0.1))
    return model.eval()


def max_diffs(reference: torch.nn.Module, ours: torch.nn.Module, images: torch.Tensor,
              tokens: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        a = reference(images, tokens)
        b = ours(images, tokens, compute_loss=False)
    pairs = {"image": ("image_features", "image_emb"), "text": ("text_features", "text_emb"),
             "logits": ("logits", "logits")}
    # open_clip's "parallel" pooling keeps a length-1 query axis on the image features.
    return {k: (a[x].reshape(b[y].shape) - b[y]).abs().max().item()
            for k, (x, y) in pairs.items()}


@pytest.mark.parametrize("pool", [True, "parallel"])
def test_small_coca_matches_open_clip(pool):
    cfg = small_cfg(pool)
    reference = randomise(CoCa(**cfg))
    ours = load_openclip_coca(reference.state_dict(), config_from_openclip(cfg)).eval()
    assert ours.config.pooler_mode == ("dual" if pool == "parallel" else "single")
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.tokenize(CAPTIONS, context_length=16)
    diffs = max_diffs(reference, ours, images, tokens)
    assert max(diffs.values()) < 1e-5, diffs


def test_legacy_cls_mask_is_what_open_clip_weights_need():
    cfg = small_cfg()
    reference = randomise(CoCa(**cfg))
    ours = load_openclip_coca(reference.state_dict(),
                              config_from_openclip(cfg, cls_mask="correct")).eval()
    images = torch.randn(3, 3, 32, 32)
    diffs = max_diffs(reference, ours, images, open_clip.tokenize(CAPTIONS, context_length=16))
    assert diffs["text"] > 1e-3


def test_checkpoint_files_load(tmp_path):
    cfg = small_cfg()
    reference = randomise(CoCa(**cfg))
    state = reference.state_dict()
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "ckpt.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "ckpt.safetensors"))
    config = config_from_openclip(cfg)
    images = torch.randn(2, 3, 32, 32)
    tokens = open_clip.tokenize(CAPTIONS[:2], context_length=16)
    for name in ("ckpt.pt", "ckpt.safetensors"):
        diffs = max_diffs(reference, load_openclip_coca(tmp_path / name, config).eval(),
                          images, tokens)
        assert max(diffs.values()) < 1e-5, (name, diffs)


def test_mismatched_weights_raise_model_error(tmp_path):
    cfg = small_cfg()
    state = dict(CoCa(**cfg).state_dict())
    with pytest.raises(ModelError, match="text_width|wrong shape|missing"):
        load_openclip_coca(state, config_from_openclip(cfg, text_width=64, text_heads=4))
    state.pop("visual.proj")
    with pytest.raises(ModelError, match="missing: \\['visual.proj'\\]"):
        load_openclip_coca(state, config_from_openclip(cfg))
    with pytest.raises(ModelError, match="only open_clip CoCa"):
        config_from_openclip({**cfg, "vision_cfg": {**cfg["vision_cfg"],
                                                    "attentional_pool": False}})
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_openclip_coca(tmp_path / "broken.pt", "coca_vit_b32")


@pytest.mark.parametrize(("name", "preset"), [("coca_ViT-B-32", "coca_vit_b32"),
                                            ("coca_ViT-L-14", "coca_vit_l14")])
def test_real_coca_configs_convert(name, preset):
    """Every tensor of the released architectures maps (on the meta device: no memory, no time).

    Numerics are covered by the small models above, which run the same code paths.
    """
    model_cfg = open_clip.get_model_config(name)
    with torch.device("meta"):
        reference = CoCa(**{k: v for k, v in model_cfg.items() if k != "custom_text"})
        ours = UrbanCLIP(UrbanCLIPConfig.from_preset(preset))
    assert config_from_openclip(model_cfg) == ours.config
    check_state_dict(ours, convert_openclip_state_dict(reference.state_dict()), source=name)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in reference.parameters())
