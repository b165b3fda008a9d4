"""UrbanCLIP network: shapes, masks, causality, losses, gradients, config."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from urbangeo.errors import InputError, ModelError
from urbangeo.model.config import PRESETS, UrbanCLIPConfig
from urbangeo.model.losses import caption_loss, contrastive_loss
from urbangeo.model.urbanclip import UrbanCLIP

SIZE = 32


def tiny(**overrides) -> UrbanCLIP:
    torch.manual_seed(0)
    cfg = UrbanCLIPConfig.from_preset("tiny", image_size=SIZE, context_length=16, **overrides)
    return UrbanCLIP(cfg).eval()


def batch(cfg: UrbanCLIPConfig, n: int = 3, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, cfg.image_size, cfg.image_size, generator=g)
    tokens = torch.randint(3, cfg.vocab_size, (n, length), generator=g)
    tokens[:, 0] = cfg.bos_id
    for i in range(n):  # captions of different lengths: eos, then padding
        end = length - 1 - 2 * i
        tokens[i, end] = cfg.eos_id
        tokens[i, end + 1:] = cfg.pad_id
    return images, tokens


@pytest.mark.parametrize("mode", ["dual", "single"])
def test_forward_shapes_and_normalised_embeddings(mode):
    model = tiny(pooler_mode=mode)
    cfg = model.config
    images, tokens = batch(cfg)
    out = model(images, tokens)
    assert out["image_emb"].shape == out["text_emb"].shape == (3, cfg.embed_dim)
    assert out["logits"].shape == (3, tokens.shape[1] - 1, cfg.vocab_size)
    assert torch.equal(out["labels"], tokens[:, 1:])
    assert torch.allclose(out["image_emb"].norm(dim=-1), torch.ones(3))
    assert torch.allclose(model.encode_image(images), out["image_emb"], atol=1e-6)
    assert torch.allclose(model.encode_text(tokens), out["text_emb"], atol=1e-6)
    assert model.image_features(images)[1].shape == (3, cfg.n_image_tokens, cfg.embed_dim)
    assert set(out["losses"]) == {"total", "con", "lm"}


def test_padding_content_does_not_change_text_embedding():
    model = tiny()
    _, tokens = batch(model.config)
    before = model.encode_text(tokens)
    shift = torch.randn(model.config.text_width, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.text.token_embedding.weight[model.config.pad_id] += shift
    after = model.encode_text(tokens)
    assert torch.allclose(before, after, atol=1e-6)
    # Sanity: the same edit on a real token does move the embedding.
    with torch.no_grad():
        model.text.token_embedding.weight[tokens[0, 1]] += shift
    assert not torch.allclose(after, model.encode_text(tokens), atol=1e-3)


def test_future_tokens_do_not_change_earlier_logits():
    model = tiny()
    images, tokens = batch(model.config, n=2)
    changed = tokens.clone()
    t = 6
    changed[:, t] = (changed[:, t] + 7) % model.config.vocab_size
    with torch.no_grad():
        _, image_tokens = model.image_features(images)
        a = model.caption_logits(image_tokens, tokens)
        b = model.caption_logits(image_tokens, changed)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert not torch.allclose(a[:, t:], b[:, t:], atol=1e-3)


def test_contrastive_loss_hand_example():
    emb = torch.eye(2)
    loss = contrastive_loss(emb, emb, torch.tensor(1.0))
    # logits [[1, 0], [0, 1]]: each row and column is -log(e / (e + 1)).
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_contrastive_loss_matches_explicit_formula():
    g = torch.Generator().manual_seed(3)
    img = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    scale = 7.0
    sim = scale * img @ txt.t()
    i2t = -sum(sim[i, i] - torch.logsumexp(sim[i], 0) for i in range(4)) / 4
    t2i = -sum(sim[i, i] - torch.logsumexp(sim[:, i], 0) for i in range(4)) / 4
    expected = (i2t + t2i) / 2
    assert contrastive_loss(img, txt, torch.tensor(scale)).item() == pytest.approx(
        expected.item(), rel=1e-5)


def test_caption_loss_ignores_padding_and_uses_the_shift():
    model = tiny()
    images, tokens = batch(model.config)
    out = model(images, tokens)
    logp = out["logits"].log_softmax(-1)
    terms = [-logp[b, t, tokens[b, t + 1]] for b in range(tokens.shape[0])
             for t in range(tokens.shape[1] - 1) if tokens[b, t + 1] != model.config.pad_id]
    expected = torch.stack(terms).mean()
    assert out["losses"]["lm"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert caption_loss(out["logits"], out["labels"], 0).item() == pytest.approx(
        expected.item(), rel=1e-5)
    total = model.config.lambda_con * out["losses"]["con"] + out["losses"]["lm"]
    assert out["losses"]["total"].item() == pytest.approx(total.item(), rel=1e-6)


def test_loss_weights_come_from_config():
    model = tiny(lambda_con=0.0, lambda_lm=2.0)
    out = model(*batch(model.config))
    assert out["losses"]["total"].item() == pytest.approx(2 * out["losses"]["lm"].item())


def test_logit_scale_is_clamped():
    model = tiny()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.logit_scale_exp().item() == pytest.approx(100.0, rel=1e-5)


@pytest.mark.parametrize("mode", ["dual", "single"])
def test_every_parameter_gets_a_gradient(mode):
    model = tiny(pooler_mode=mode).train()
    out = model(*batch(model.config))
    out["losses"]["total"].backward()
    dead = [n for n, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert dead == []


def test_sdpa_backend_forced_by_env_gives_same_outputs(monkeypatch):
    model = tiny()
    images, tokens = batch(model.config)
    default = model(images, tokens)["losses"]["total"]
    monkeypatch.setenv("URBANGEO_ATTENTION", "sdpa")
    forced = tiny()(images, tokens)["losses"]["total"]
    assert torch.allclose(default, forced, atol=1e-6)


def test_wrong_inputs_raise_clear_errors():
    model = tiny()
    images, tokens = batch(model.config)
    with pytest.raises(InputError, match="resize"):
        model.encode_image(torch.randn(1, 3, SIZE + 16, SIZE + 16))
    with pytest.raises(InputError, match="context length"):
        model.encode_text(torch.zeros(1, model.config.context_length + 1, dtype=torch.long))


def test_normalize_pixels_uses_config_statistics():
    model = tiny(image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))
    normalised = model.normalize_pixels(torch.ones(1, 3, 2, 2))
    assert torch.allclose(normalised, torch.full((1, 3, 2, 2), 2.0))


def test_config_json_round_trip_and_validation():
    for name in PRESETS:
        cfg = UrbanCLIPConfig.from_preset(name)
        assert UrbanCLIPConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ModelError, match="multiple of patch_size"):
        UrbanCLIPConfig.from_preset("tiny", image_size=40)
    with pytest.raises(ModelError, match="unknown fields"):
        UrbanCLIPConfig.from_dict({**UrbanCLIPConfig().to_dict(), "colour": "red"})
    with pytest.raises(ModelError, match="unknown model preset"):
        UrbanCLIPConfig.from_preset("huge")


def test_presets_build_with_expected_sizes():
    for name in ("small", "base", "coca_vit_b32"):
        cfg = UrbanCLIPConfig.from_preset(name)
        with torch.device("meta"):
            model = UrbanCLIP(cfg)
        assert model.visual.positional_embedding.shape == (cfg.grid_size ** 2 + 1, cfg.vision_width)
        assert model.text_decoder.text_projection.shape == (cfg.text_width, cfg.vocab_size)
    assert UrbanCLIPConfig.from_preset("base").patch_size == 16
