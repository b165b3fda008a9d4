"""UrbanCLIP network: shapes, masks, causality, losses, gradients, config.

Attention backends (Triton kernel vs SDPA) are compared on this model in test_attention.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from urbangeo.errors import InputError, ModelError
from urbangeo.model.config import PRESETS, UrbanCLIPConfig
from urbangeo.model.losses import caption_loss, contrastive_loss
from urbangeo.model.tokenizer import clip_tokenizer
from urbangeo.model.urbanclip import UrbanCLIP

SIZE = 32


def tiny(**overrides) -> UrbanCLIP:
    torch.manual_seed(0)
    cfg = UrbanCLIPConfig.from_preset("tiny", image_size=SIZE, context_length=16, **overrides)
    return UrbanCLIP(cfg).eval()


BANG = 2  # where batch() puts the pad id inside every caption, as CLIP's "!" (id 0) would be


def eos_positions(n: int = 3, length: int = 12) -> list[int]:
    """Where batch() ends its captions: row ``i`` at ``length - 1 - 2 * i``."""
    return [length - 1 - 2 * i for i in range(n)]


def batch(cfg: UrbanCLIPConfig, n: int = 3, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions of different lengths (EOS, then padding), each with the pad id inside it."""
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, cfg.image_size, cfg.image_size, generator=g)
    tokens = torch.randint(3, cfg.vocab_size, (n, length), generator=g)
    tokens[:, 0] = cfg.bos_id
    tokens[:, BANG] = cfg.pad_id
    for i, end in enumerate(eos_positions(n, length)):
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


def test_padding_mask_is_what_follows_the_first_eos():
    correct = UrbanCLIPConfig.from_preset("tiny")
    legacy = UrbanCLIPConfig.from_preset("tiny", cls_mask="legacy")
    bos, eos, pad = correct.bos_id, correct.eos_id, correct.pad_id
    rows = torch.tensor([[bos, 5, pad, 7, eos, pad, pad],
                         [bos, eos, eos, 9, pad, pad, pad],
                         [bos, pad, 5, 6, 7, 8, 9]])  # cut without EOS: no padding
    f, t = False, True
    assert correct.padding_mask(rows).tolist() == [[f, f, f, f, f, t, t],
                                                   [f, f, t, t, t, t, t],
                                                   [f, f, f, f, f, f, f]]
    assert legacy.padding_mask(rows).tolist() == [[f, f, t, f, f, t, t],
                                                  [f, f, f, f, t, t, t],
                                                  [f, t, f, f, f, f, f]]
    assert correct.padding_mask(rows.numpy()).tolist() == correct.padding_mask(rows).tolist()


def test_text_tower_masks_the_keys_the_tokenizer_calls_padding():
    """CLIP pads with id 0, also the real token "!": only what follows the EOS is padding."""
    try:
        tok = clip_tokenizer(context_length=16)
    except InputError as exc:
        pytest.skip(f"open-clip-torch (a dev dependency) is not installed: {exc}")
    model = tiny(vocab_size=tok.vocab_size, pad_id=tok.pad_id, bos_id=tok.bos_id,
                 eos_id=tok.eos_id)
    tokens = tok.encode_batch(["dense blocks !(harbour)", "farmland"], return_tensors="pt")
    end = tokens[0].tolist().index(tok.eos_id)
    assert tok.pad_id in tokens[0, :end].tolist()  # "!(" holds id 0 before the EOS
    mask = model.text.key_padding_mask(tokens)
    assert torch.equal(mask[:, :-1], tok.padding_mask(tokens))
    assert not mask[:, -1].any()  # the appended CLS is always a key
    before = model.encode_text(tokens)
    with torch.no_grad():  # a random shift (a constant one would vanish in the LayerNorm)
        model.text.token_embedding.weight[tok.pad_id] += torch.randn(model.config.text_width)
    after = model.encode_text(tokens)
    assert not torch.allclose(before[0], after[0], atol=1e-3)  # the "!" is read
    assert torch.allclose(before[1], after[1], atol=1e-6)  # the padding is not


def test_padding_content_does_not_change_text_embedding():
    model = tiny()
    _, tokens = batch(model.config)
    before = model.encode_text(tokens)
    changed = tokens.clone()
    for row, end in enumerate(eos_positions()):
        changed[row, end + 1:] = torch.arange(3, 3 + tokens.shape[1] - end - 1)
    assert torch.allclose(before, model.encode_text(changed), atol=1e-6)
    # Sanity: changing a token before the EOS does move the embedding.
    changed[:, 1] = (changed[:, 1] + 1) % model.config.vocab_size
    assert not torch.allclose(before, model.encode_text(changed), atol=1e-3)


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


@pytest.mark.parametrize("cls_mask", ["correct", "legacy"])
def test_caption_loss_counts_every_label_up_to_the_eos(cls_mask):
    """Hand-written expectation: row ``i`` predicts labels 1..EOS; legacy also drops the "!"."""
    model = tiny(cls_mask=cls_mask)
    images, tokens = batch(model.config)
    out = model(images, tokens)
    logp = out["logits"].log_softmax(-1)
    dropped = {BANG} if cls_mask == "legacy" else set()
    terms = [-logp[b, t - 1, tokens[b, t]] for b, end in enumerate(eos_positions())
             for t in range(1, end + 1) if t not in dropped]
    expected = torch.stack(terms).mean()
    assert out["losses"]["lm"].item() == pytest.approx(expected.item(), rel=1e-5)
    total = model.config.lambda_con * out["losses"]["con"] + out["losses"]["lm"]
    assert out["losses"]["total"].item() == pytest.approx(total.item(), rel=1e-6)


def test_caption_loss_leaves_out_exactly_the_given_labels():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 5, generator=g)
    labels = torch.tensor([[0, 4, 1], [2, 0, 3]])  # label 0 is an ordinary class here
    padding = torch.tensor([[False, False, True], [False, True, True]])
    logp = logits.log_softmax(-1)
    expected = -(logp[0, 0, 0] + logp[0, 1, 4] + logp[1, 0, 2]) / 3
    assert caption_loss(logits, labels, padding).item() == pytest.approx(expected.item(),
                                                                         rel=1e-6)


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
