"""Attentional pooling: learnt queries attend to the ViT tokens (CoCa's task adapters).

The paper pools the image twice from one backbone: one query for the coarse contrastive
alignment, the whole query sequence for the fine-grained multimodal decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from urbangeo.model.layers import MultiHeadAttention


class AttentionalPooler(nn.Module):
    """``n_queries`` learnt queries (LayerNorm ``ln_q``) attend to LayerNormed keys (``ln_k``).

    No residual and no MLP: the output is the attention result itself, as in open_clip.
    """

    def __init__(self, dim: int, context_dim: int, heads: int, n_queries: int,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, dim) * dim ** -0.5)
        self.attn = MultiHeadAttention(dim, heads, kv_dim=context_dim)
        self.ln_q = nn.LayerNorm(dim, eps=eps)
        self.ln_k = nn.LayerNorm(context_dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, L, context_dim) -> (B, n_queries, dim)."""
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn(q, self.ln_k(x))
