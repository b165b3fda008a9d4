"""Caption decoding (greedy, beam search, nucleus sampling) with a KV cache.

open_clip re-runs the whole decoder on the full prefix at every step; here each attention layer
keeps its keys and values, and the cross-attention keys/values of the image tokens are computed
once, so a step costs one token's worth of work. ``use_cache=False`` keeps the re-run path as
the reference the cache is tested against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from urbangeo.errors import InputError
from urbangeo.model.layers import KVCache

if TYPE_CHECKING:
    from urbangeo.model.config import UrbanCLIPConfig
    from urbangeo.model.urbanclip import UrbanCLIP

STRATEGIES = ("greedy", "beam", "top_p")


class _Stepper:
    """Next-token logits for a batch of growing sequences, cached or re-run."""

    def __init__(self, model: UrbanCLIP, image_tokens: Tensor, use_cache: bool) -> None:
        cfg = model.config
        self.model, self.image_tokens, self.use_cache = model, image_tokens, use_cache
        self.text_caches = [KVCache() for _ in range(cfg.text_layers)]
        self.decoder_caches = [(KVCache(), KVCache(static=True))
                               for _ in range(cfg.multimodal_layers)]
        self.seen = 0

    def next_logits(self, seq: Tensor) -> Tensor:
        """Logits (B, vocab) for the token after ``seq`` (B, L), float32."""
        if not self.use_cache:
            return self.model.caption_logits(self.image_tokens, seq)[:, -1].float()
        states = self.model.text.decode_states(seq[:, self.seen:], self.seen, self.text_caches)
        logits = self.model.text_decoder(states, self.image_tokens, self.decoder_caches)
        self.seen = seq.shape[1]
        return logits[:, -1].float()

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search reshuffles its beams every step)."""
        self.image_tokens = self.image_tokens.index_select(0, index)
        for cache in self.text_caches:
            cache.reorder(index)
        for self_cache, cross_cache in self.decoder_caches:
            self_cache.reorder(index)
            cross_cache.reorder(index)


def _never_generated(cfg: UrbanCLIPConfig) -> list[int]:
    """Ids a caption never continues with: BOS, and the pad id where it would read as padding.

    Asked of :meth:`UrbanCLIPConfig.padding_mask` rather than assumed: under ``"legacy"`` a pad
    id is padding wherever it stands, so generating it would end the caption unseen; under
    ``"correct"`` only what follows the EOS is padding, so the pad id is an ordinary token
    there (CLIP's ``!``).
    """
    after_bos = torch.tensor([[cfg.bos_id, cfg.pad_id]])
    return [cfg.bos_id, *([cfg.pad_id] if bool(cfg.padding_mask(after_bos)[0, 1]) else [])]


def _forbid(logits: Tensor, forbidden: list[int]) -> Tensor:
    logits[:, forbidden] = float("-inf")
    return logits


def _sample_top_p(logits: Tensor, top_p: float, generator: torch.Generator | None) -> Tensor:
    """Sample from the smallest set of tokens whose probability reaches ``top_p``.

    The draw happens on the generator's device (multinomial refuses a CPU generator for CUDA
    probabilities), so one seeded CPU generator serves a model on any device.
    """
    probs, order = logits.softmax(-1).sort(dim=-1, descending=True)
    keep = probs.cumsum(-1) - probs < top_p  # the most likely token is always kept
    weights = probs * keep
    if generator is not None:
        weights = weights.to(generator.device)
    choice = torch.multinomial(weights, 1, generator=generator).to(logits.device)
    return order.gather(-1, choice).squeeze(-1)


def _sample_loop(stepper: _Stepper, seq: Tensor, max_new_tokens: int, strategy: str, *,
                 forbidden: list[int], pad_id: int, eos_id: int, top_p: float,
                 temperature: float, generator: torch.Generator | None) -> Tensor:
    done = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    for _ in range(max_new_tokens):
        logits = _forbid(stepper.next_logits(seq), forbidden)
        if strategy == "greedy":
            token = logits.argmax(-1)
        else:
            token = _sample_top_p(logits / temperature, top_p, generator)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        seq = torch.cat([seq, token[:, None]], dim=1)
        done |= token == eos_id
        if bool(done.all()):
            break
    return seq


def _beam_search(stepper: _Stepper, seq: Tensor, max_new_tokens: int, num_beams: int, *,
                 forbidden: list[int], pad_id: int, eos_id: int, length_penalty: float
                 ) -> Tensor:
    """Standard beam search; hypotheses are ranked by ``sum log p / n_new ** length_penalty``.

    A batch row stops once its best live beam, normalised at the current length, is no better
    than the worst of its ``num_beams`` finished hypotheses (the usual heuristic, Hugging Face's
    ``early_stopping=False``). That bound is exact for ``length_penalty <= 0``; for
    ``length_penalty > 0`` a longer continuation is divided by a larger ``n_new **
    length_penalty`` and can still overtake, so the search may miss the best-scoring caption.
    """
    batch, k = seq.shape[0], num_beams
    rows = torch.arange(batch, device=seq.device).repeat_interleave(k)
    stepper.reorder(rows)
    seq = seq.index_select(0, rows)
    scores = torch.full((batch, k), float("-inf"), device=seq.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def norm(score: float, n_new: int) -> float:
        return score / n_new ** length_penalty

    for step in range(1, max_new_tokens + 1):
        logp = _forbid(stepper.next_logits(seq), forbidden).log_softmax(-1)
        vocab = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(batch, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=-1)
        src, tokens, new_scores = [], [], []
        for b in range(batch):
            picked: list[tuple[float, int, int]] = []
            for rank, (s, i) in enumerate(zip(top_scores[b].tolist(), top_idx[b].tolist(),
                                                   strict=True)):
                beam, token = divmod(i, vocab)
                if token == eos_id:
                    if rank < k and not done[b]:
                        finished[b].append((norm(s, step), seq[b * k + beam].tolist() + [eos_id]))
                else:
                    picked.append((s, beam, token))
                if len(picked) == k:
                    break
            for s, beam, token in picked:
                src.append(b * k + beam)
                tokens.append(token)
                new_scores.append(s)
            best = sorted(h[0] for h in finished[b])[-k:]
            if len(best) == k and norm(picked[0][0], step) <= best[0]:
                done[b] = True
        index = torch.tensor(src, device=seq.device)
        stepper.reorder(index)
        seq = torch.cat([seq.index_select(0, index),
                         torch.tensor(tokens, device=seq.device)[:, None]], dim=1)
        scores = torch.tensor(new_scores, device=seq.device).view(batch, k)
        if all(done):
            break
    for b in range(batch):
        if not done[b]:  # ran out of length: unfinished beams compete too
            finished[b] += [(norm(s, step), seq[b * k + j].tolist())
                            for j, s in enumerate(scores[b].tolist())]
    best_seqs = [max(finished[b], key=lambda h: h[0])[1] for b in range(batch)]
    width = max(len(s) for s in best_seqs)
    return torch.tensor([s + [pad_id] * (width - len(s)) for s in best_seqs], device=seq.device)


@torch.no_grad()
def generate(model: UrbanCLIP, images: Tensor, *, max_new_tokens: int = 30,
             strategy: str = "greedy", num_beams: int = 4, top_p: float = 0.9,
             temperature: float = 1.0, length_penalty: float = 1.0,
             generator: torch.Generator | None = None, prompt: Tensor | None = None,
             use_cache: bool = True) -> Tensor:
    """Caption ids (B, T): the prompt (default: BOS), new tokens, EOS, then padding.

    ``top_p`` sampling draws from ``generator`` (on any device; the draw runs on the
    generator's device) so a seeded generator gives the same captions. Beam search stops early
    by the standard heuristic, which with ``length_penalty > 0`` can miss the best-scoring
    caption (see ``_beam_search``).
    BOS is never generated, nor is the pad id where it means padding.
    The model is put in eval mode for the call.
    """
    cfg = model.config
    if strategy not in STRATEGIES:
        raise InputError(f"unknown decoding strategy {strategy!r}; choose one of {STRATEGIES}")
    if prompt is None:
        prompt = torch.full((images.shape[0], 1), cfg.bos_id, dtype=torch.long,
                            device=images.device)
    if max_new_tokens < 1 or prompt.shape[1] + max_new_tokens > cfg.context_length:
        raise InputError(f"max_new_tokens must be between 1 and {cfg.context_length} minus the "
                         f"prompt length ({prompt.shape[1]}), got {max_new_tokens}")
    if strategy == "beam" and num_beams < 1:
        raise InputError(f"num_beams must be at least 1, got {num_beams}")
    if strategy == "top_p" and not (0.0 < top_p <= 1.0 and temperature > 0):
        raise InputError("top_p must be in (0, 1] and temperature > 0")
    was_training = model.training
    model.eval()
    try:
        _, image_tokens = model.image_features(images)
        stepper = _Stepper(model, image_tokens, use_cache)
        ids = dict(forbidden=_never_generated(cfg), pad_id=cfg.pad_id, eos_id=cfg.eos_id)
        if strategy == "beam":
            return _beam_search(stepper, prompt, max_new_tokens, num_beams,
                                length_penalty=length_penalty, **ids)
        return _sample_loop(stepper, prompt, max_new_tokens, strategy, top_p=top_p,
                            temperature=temperature, generator=generator, **ids)
    finally:
        model.train(was_training)
