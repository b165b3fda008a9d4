"""Transformer building blocks shared by the image and text towers.

Every attention goes through :func:`urbangeo.model.attention.attention` (fused Triton on CUDA,
SDPA elsewhere). Parameter names (``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``,
``ln_1_kv``) follow open_clip so its CoCa weights map one to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from urbangeo.model import attention as attention_dispatch


@dataclass
class KVCache:
    """Keys and values of one attention layer kept across decoding steps.

    Self-attention caches grow by the new tokens each step; a ``static`` cache (cross-attention
    to the image tokens) is filled once on the first step and reused.
    """

    static: bool = False
    k: Tensor | None = None
    v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None or self.v is None or self.static:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v

    @property
    def filled(self) -> bool:
        return self.k is not None

    def reorder(self, index: Tensor) -> None:
        """Follow beam search: keep rows ``index`` of the batch."""
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head attention; ``kv_dim`` differs from ``dim`` when attending to another tower."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        kv_dim = kv_dim or dim
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, *, causal: bool = False,
                key_padding_mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Attend from ``x`` (B, Lq, dim) to ``context`` (B, Lk, kv_dim), or to ``x`` itself.

        With a filled static ``cache`` the context is not needed (and not projected again).
        """
        q = self._split(self.q_proj(x))
        if cache is not None and cache.static and cache.filled:
            k, v = cache.k, cache.v
        else:
            source = x if context is None else context
            k, v = self._split(self.k_proj(source)), self._split(self.v_proj(source))
            if cache is not None:
                k, v = cache.update(k, v)
        out = attention_dispatch.attention(q, k, v, causal=causal,
                                           key_padding_mask=key_padding_mask)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.c_fc = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.c_proj = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LN residual block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    Given ``context_dim`` it is a cross-attention block: queries from ``x``, keys and values from
    ``ln_1_kv(context)``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, *,
                 context_dim: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, heads, kv_dim=context_dim)
        self.ln_1_kv = nn.LayerNorm(context_dim, eps=eps) if context_dim else None
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: Tensor, context: Tensor | None = None, *, causal: bool = False,
                key_padding_mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if self.ln_1_kv is not None and context is not None and (cache is None
                                                                 or not cache.filled):
            context = self.ln_1_kv(context)
        x = x + self.attn(self.ln_1(x), context, causal=causal,
                          key_padding_mask=key_padding_mask, cache=cache)
        return x + self.mlp(self.ln_2(x))
