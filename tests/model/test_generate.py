"""Caption decoding: the KV cache changes nothing but speed; beams and sampling behave."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from urbangeo.errors import InputError
from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.generate import _Stepper
from urbangeo.model.urbanclip import UrbanCLIP

STEPS = 14


@pytest.fixture(scope="module")
def model() -> UrbanCLIP:
    """A tiny random model nudged to end captions (EOS) at different lengths."""
    torch.manual_seed(0)
    cfg = UrbanCLIPConfig.from_preset("tiny", image_size=32, context_length=24, vocab_size=64)
    net = UrbanCLIP(cfg).eval()
    with torch.no_grad():
        net.text_decoder.text_projection[:, cfg.eos_id] *= 2.0
    return net


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _pad(seq: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    return torch.nn.functional.pad(seq, (0, width - seq.shape[1]), value=pad_id)


def _check_valid(seq: torch.Tensor, cfg: UrbanCLIPConfig) -> None:
    """BOS first and never again; after the first EOS only padding (the pad id may be text)."""
    assert (seq[:, 0] == cfg.bos_id).all()
    assert ((seq >= 0) & (seq < cfg.vocab_size)).all()
    assert not (seq[:, 1:] == cfg.bos_id).any()
    for row in seq.tolist():
        if cfg.eos_id in row:
            end = row.index(cfg.eos_id)
            assert all(t == cfg.pad_id for t in row[end + 1:])


def test_cached_logits_equal_full_rerun(model, images):
    cfg = model.config
    seq = torch.randint(3, cfg.vocab_size, (4, 9), generator=torch.Generator().manual_seed(1))
    seq[:, 0] = cfg.bos_id
    seq[:, 3] = cfg.pad_id  # CLIP's "!": text before any EOS, in the full re-run as in the cache
    with torch.no_grad():
        _, image_tokens = model.image_features(images)
        full = model.caption_logits(image_tokens, seq)
        stepper = _Stepper(model, image_tokens, use_cache=True)
        first = stepper.next_logits(seq[:, :5])  # a prompt, then one token at a time
        steps = [stepper.next_logits(seq[:, : t + 1]) for t in range(5, 9)]
    assert torch.allclose(first, full[:, 4], atol=1e-5)
    for t, logits in zip(range(5, 9), steps, strict=True):
        assert torch.allclose(logits, full[:, t], atol=1e-5)


def test_greedy_with_cache_equals_naive_rerun(model, images):
    cached = model.generate(images, STEPS, "greedy")
    naive = model.generate(images, STEPS, "greedy", use_cache=False)
    assert torch.equal(cached, naive)
    _check_valid(cached, model.config)
    ends = [row.index(model.config.eos_id) if model.config.eos_id in row else None
            for row in cached.tolist()]
    assert len(set(ends)) > 1, "fixture should end captions at different lengths"


def test_greedy_continues_a_prompt(model, images):
    cfg = model.config
    prompt = torch.tensor([[cfg.bos_id, 7, 9]] * images.shape[0])
    out = model.generate(images, 5, "greedy", prompt=prompt)
    assert torch.equal(out[:, :3], prompt)
    assert torch.equal(out, model.generate(images, 5, "greedy", prompt=prompt, use_cache=False))


def test_beam_search_returns_valid_sequences(model, images):
    cfg = model.config
    out = model.generate(images, STEPS, "beam", num_beams=3)
    assert out.shape[0] == images.shape[0] and out.shape[1] <= STEPS + 1
    _check_valid(out, cfg)
    assert torch.equal(out, model.generate(images, STEPS, "beam", num_beams=3, use_cache=False))


def test_one_beam_is_greedy(model, images):
    greedy = model.generate(images, STEPS, "greedy")
    beam = model.generate(images, STEPS, "beam", num_beams=1)
    assert torch.equal(_pad(beam, greedy.shape[1], model.config.pad_id), greedy)


def _brute_force_ranking(model: UrbanCLIP, image: torch.Tensor, max_new: int,
                         length_penalty: float) -> list[tuple[float, tuple[int, ...]]]:
    """Every caption of at most ``max_new`` new tokens, best first, scored like beam search.

    Score: total log-probability of the new tokens (EOS included) divided by their count to the
    power ``length_penalty``; captions that never end are cut at ``max_new`` tokens. Each
    distribution comes from a full re-run of the model (no cache) with BOS excluded, as a
    caption never continues with BOS.
    """
    cfg = model.config
    words = [t for t in range(cfg.vocab_size) if t not in (cfg.bos_id, cfg.eos_id)]
    tails = list(itertools.product(words, repeat=max_new))
    seqs = torch.tensor([[cfg.bos_id, *tail] for tail in tails])
    with torch.no_grad():
        _, image_tokens = model.image_features(image)
        logits = model.caption_logits(image_tokens.expand(len(tails), -1, -1), seqs).float()
    logits[..., cfg.bos_id] = float("-inf")
    logp = logits.log_softmax(-1).tolist()
    scores: dict[tuple[int, ...], float] = {}
    for row, tail in enumerate(tails):
        total = 0.0
        for n in range(max_new):
            ended = total + logp[row][n][cfg.eos_id]
            scores[(cfg.bos_id, *tail[:n], cfg.eos_id)] = ended / (n + 1) ** length_penalty
            total += logp[row][n][tail[n]]
        scores[(cfg.bos_id, *tail)] = total / max_new ** length_penalty
    return sorted(((score, seq) for seq, score in scores.items()), reverse=True)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_finds_the_brute_force_best_caption(length_penalty):
    """Vocabulary of 6 (4 tokens besides BOS and EOS), 3 new tokens: 85 possible captions.

    80 beams keep every hypothesis alive, so beam search must return the exact best one; the
    seed is one where greedy decoding misses it.
    """
    torch.manual_seed(5)
    cfg = UrbanCLIPConfig.from_preset("tiny", image_size=32, context_length=8, vocab_size=6)
    net = UrbanCLIP(cfg).eval()
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    max_new = 3
    ranking = _brute_force_ranking(net, image, max_new, length_penalty)
    assert len(ranking) == 1 + 4 + 16 + 64  # ending after 1, 2, 3 tokens; cut at 3
    (best_score, best), (second_score, _) = ranking[:2]
    assert best_score - second_score > 1e-4, "the test needs a unique best caption"
    beam = net.generate(image, max_new, "beam", num_beams=80, length_penalty=length_penalty)
    assert tuple(beam[0].tolist()) == best
    assert tuple(net.generate(image, max_new, "greedy")[0].tolist()) != best


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_pad_id_is_generated_only_where_it_is_a_token(strategy):
    """CLIP's pad id 0 is also "!": a model that prefers it writes it unless the legacy rule
    (any pad id is padding) is in force, where the next best token comes instead."""
    outputs = {}
    for cls_mask in ("correct", "legacy"):
        torch.manual_seed(0)
        cfg = UrbanCLIPConfig.from_preset("tiny", image_size=32, context_length=8, vocab_size=8,
                                          cls_mask=cls_mask)
        net = UrbanCLIP(cfg).eval()
        decoder = net.text_decoder
        with torch.no_grad():  # the same logits after every prefix: pad id first, 5 second
            decoder.ln_final.weight.zero_()
            direction = decoder.ln_final.bias.normal_()
            decoder.text_projection.zero_()
            decoder.text_projection[:, cfg.pad_id] = 2 * direction
            decoder.text_projection[:, 5] = direction
        image = torch.randn(1, 3, 32, 32)
        outputs[cls_mask] = net.generate(image, 4, strategy, num_beams=2)[0].tolist()
    assert outputs["correct"] == [1, 0, 0, 0, 0]
    assert outputs["legacy"] == [1, 5, 5, 5, 5]


def test_top_p_is_deterministic_with_a_seeded_generator(model, images):
    def sample(seed: int) -> torch.Tensor:
        return model.generate(images, STEPS, "top_p", top_p=0.95, temperature=2.0,
                              generator=torch.Generator().manual_seed(seed))

    first = sample(0)
    assert torch.equal(first, sample(0))
    assert not torch.equal(first, sample(1))
    _check_valid(first, model.config)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_top_p_on_cuda_draws_from_a_cpu_generator(model, images, monkeypatch):
    """multinomial refuses a CPU generator for CUDA probabilities; generate must not."""
    monkeypatch.setenv("URBANGEO_ATTENTION", "sdpa")  # not the interpreted kernels on CUDA
    net = copy.deepcopy(model).cuda()

    def sample(seed: int) -> torch.Tensor:
        return net.generate(images.cuda(), STEPS, "top_p", top_p=0.95, temperature=2.0,
                            generator=torch.Generator().manual_seed(seed))

    first = sample(0)
    assert first.device.type == "cuda" and torch.equal(first, sample(0))
    _check_valid(first.cpu(), net.config)


def test_tiny_top_p_keeps_only_the_best_token(model, images):
    sampled = model.generate(images, STEPS, "top_p", top_p=1e-9,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, model.generate(images, STEPS, "greedy"))


def test_generate_restores_training_mode_and_checks_arguments(model, images):
    model.train()
    model.generate(images[:1], 3)
    assert model.training
    model.eval()
    with pytest.raises(InputError, match="strategy"):
        model.generate(images, 3, "nucleus")
    with pytest.raises(InputError, match="max_new_tokens"):
        model.generate(images, model.config.context_length)
