"""ViT image encoder with attentional pooling into a contrastive vector and decoder tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.layers import Block
from urbangeo.model.pooler import AttentionalPooler


class VisionTransformer(nn.Module):
    """Patch embedding, class token, learnt positions, pre-LN blocks, then pooling.

    ``forward`` returns ``(pooled, tokens)``: the projected contrastive embedding (B, embed_dim)
    and the generative pooler's tokens (B, n_image_tokens, embed_dim) for cross-attention.
    Names (``conv1``, ``class_embedding``, ``ln_pre``, ``attn_pool``, ``ln_post``, ``proj``)
    follow open_clip so its weights import one to one.
    """

    def __init__(self, cfg: UrbanCLIPConfig) -> None:
        super().__init__()
        width, eps = cfg.vision_width, cfg.layer_norm_eps
        self.pooler_mode = cfg.pooler_mode
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size,
                               bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid_size ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps)
        self.blocks = nn.ModuleList(Block(width, cfg.vision_heads, cfg.mlp_ratio, eps=eps)
                                    for _ in range(cfg.vision_layers))
        self.attn_pool = AttentionalPooler(cfg.embed_dim, width, cfg.pooler_heads,
                                           cfg.n_queries, eps=eps)
        if cfg.pooler_mode == "dual":
            self.attn_pool_contrastive = AttentionalPooler(cfg.embed_dim, width,
                                                           cfg.pooler_heads, 1, eps=eps)
            self.ln_post = nn.LayerNorm(width, eps=eps)
        else:
            self.attn_pool_contrastive = None
            self.ln_post = nn.LayerNorm(cfg.embed_dim, eps=eps)
        self.proj = nn.Parameter(cfg.embed_dim ** -0.5 * torch.randn(cfg.embed_dim, cfg.embed_dim))

    def trunk(self, images: Tensor) -> Tensor:
        """Normalised images (B, 3, H, W) -> ViT tokens (B, 1 + grid**2, width), CLS first."""
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self.trunk(images)
        if self.attn_pool_contrastive is not None:  # paper: two poolers on normalised tokens
            x = self.ln_post(x)
            pooled, tokens = self.attn_pool_contrastive(x)[:, 0], self.attn_pool(x)
        else:  # open_clip CoCa: one pooler, its first query is the contrastive one
            x = self.ln_post(self.attn_pool(x))
            pooled, tokens = x[:, 0], x[:, 1:]
        return pooled @ self.proj, tokens
