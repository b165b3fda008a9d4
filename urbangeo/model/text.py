"""Decoupled causal text decoder (paper §3.2-3.3, CoCa).

The unimodal half (:class:`TextTransformer`) reads the caption with a causal mask and a CLS
token appended after the (padded) sequence; the CLS output is the text embedding. The
multimodal half (:class:`MultimodalDecoder`) continues from the unimodal token states, adding
cross-attention to the generative pooler's image tokens, and predicts the next token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.layers import Block, KVCache


class TextTransformer(nn.Module):
    """Token + position embeddings, CLS appended, causal pre-LN blocks (open_clip names)."""

    def __init__(self, cfg: UrbanCLIPConfig) -> None:
        super().__init__()
        width, eps = cfg.text_width, cfg.layer_norm_eps
        self.config = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.cls_emb = nn.Parameter(0.01 * torch.randn(width))
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length + 1, width))
        self.blocks = nn.ModuleList(Block(width, cfg.text_heads, cfg.mlp_ratio, eps=eps)
                                    for _ in range(cfg.text_layers))
        self.ln_final = nn.LayerNorm(width, eps=eps)
        self.text_projection = nn.Parameter(width ** -0.5 * torch.randn(width, cfg.embed_dim))

    def key_padding_mask(self, tokens: Tensor) -> Tensor:
        """(B, L + 1) True where a key (token or the appended CLS) must be ignored."""
        pad = self.config.padding_mask(tokens)
        never = torch.zeros_like(pad[:, :1])
        # legacy: open_clip CoCa put the CLS "valid" flag first, shifting the mask by one key.
        legacy = self.config.cls_mask == "legacy"
        return torch.cat([never, pad] if legacy else [pad, never], dim=1)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens (B, L) -> text embedding (B, embed_dim) and token states (B, L, width)."""
        x = self.token_embedding(tokens)
        x = torch.cat([x, self.cls_emb.to(x.dtype).expand(x.shape[0], 1, -1)], dim=1)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        mask = self.key_padding_mask(tokens)
        for block in self.blocks:
            x = block(x, causal=True, key_padding_mask=mask)
        pooled = self.ln_final(x[:, -1]) @ self.text_projection
        return pooled, x[:, :-1]

    def decode_states(self, tokens: Tensor, start: int, caches: list[KVCache]) -> Tensor:
        """Token states of ``tokens`` at positions ``start...`` for cached decoding.

        No CLS (it comes after every real token, so causality hides it from them) and no padding
        mask: a decoded prefix holds no padding.
        """
        x = self.token_embedding(tokens)
        x = x + self.positional_embedding[start: start + x.shape[1]].to(x.dtype)
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, causal=True, cache=cache)
        return x


class MultimodalDecoder(nn.Module):
    """Causal self-attention block then cross-attention block per layer, LN, vocab projection."""

    def __init__(self, cfg: UrbanCLIPConfig) -> None:
        super().__init__()
        width, eps = cfg.text_width, cfg.layer_norm_eps
        self.resblocks = nn.ModuleList(Block(width, cfg.text_heads, cfg.mlp_ratio, eps=eps)
                                       for _ in range(cfg.multimodal_layers))
        self.cross_attn = nn.ModuleList(
            Block(width, cfg.text_heads, cfg.mlp_ratio, context_dim=cfg.embed_dim, eps=eps)
            for _ in range(cfg.multimodal_layers))
        self.ln_final = nn.LayerNorm(width, eps=eps)
        self.text_projection = nn.Parameter(width ** -0.5 * torch.randn(width, cfg.vocab_size))

    def forward(self, states: Tensor, image_tokens: Tensor,
                caches: list[tuple[KVCache | None, KVCache | None]] | None = None
                ) -> Tensor:
        """Token states (B, L, width) + image tokens (B, N, embed_dim) -> logits (B, L, vocab)."""
        caches = caches or [(None, None)] * len(self.resblocks)
        layers = zip(self.resblocks, self.cross_attn, caches, strict=True)
        x = states
        for self_block, cross_block, (self_cache, cross_cache) in layers:
            x = self_block(x, causal=True, cache=self_cache)
            x = cross_block(x, image_tokens, cache=cross_cache)
        return self.ln_final(x) @ self.text_projection
