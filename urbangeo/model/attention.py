"""The one attention function every attention in the model calls.

Shapes: ``q`` (B, H, Lq, D); ``k``, ``v`` (B, H, Lk, D). ``key_padding_mask`` is a bool
(B, Lk) tensor, True where a key is padding and must be ignored (nn.MultiheadAttention's
convention). ``causal`` aligns the mask bottom-right (query i sees keys j <= i + Lk - Lq), the
FlashAttention-2 convention, so one call serves both full sequences and KV-cached decoding.
Rows whose keys are all masked return zeros, never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _sdpa(q: Tensor, k: Tensor, v: Tensor, causal: bool, key_padding_mask: Tensor | None,
          scale: float | None) -> Tensor:
    lq, lk = q.shape[-2], k.shape[-2]
    if key_padding_mask is None and (not causal or lq == lk):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
    if causal:
        keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
    keep = keep.expand(q.shape[0], 1, lq, lk)
    if key_padding_mask is not None:
        keep = keep & ~key_padding_mask[:, None, None, :].to(torch.bool)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)
    # SDPA gives NaN for rows with no visible key; the contract is zeros.
    return out.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)


def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
              key_padding_mask: Tensor | None = None, scale: float | None = None) -> Tensor:
    """Scaled dot-product attention through urbangeo's dispatch (see module docstring)."""
    return _sdpa(q, k, v, causal, key_padding_mask, scale)
