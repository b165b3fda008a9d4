"""The UrbanCLIP network: ViT + attentional poolers + decoupled causal text decoder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urbangeo.errors import InputError
from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.generate import generate
from urbangeo.model.losses import urbanclip_loss
from urbangeo.model.text import MultimodalDecoder, TextTransformer
from urbangeo.model.vit import VisionTransformer


class UrbanCLIP(nn.Module):
    """CoCa-style image-text model (paper §3). Module names follow open_clip's ``CoCa``."""

    def __init__(self, config: UrbanCLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)
        self.text = TextTransformer(config)
        self.text_decoder = MultimodalDecoder(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    def normalize_pixels(self, images: Tensor) -> Tensor:
        """RGB in [0, 1] (B, 3, H, W) -> the normalised input the weights were trained on."""
        mean, std = (torch.tensor(v, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
                     for v in (self.config.image_mean, self.config.image_std))
        return (images - mean) / std

    def _check_images(self, images: Tensor) -> None:
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise InputError(f"the model expects RGB images of shape (batch, 3, {size}, {size}), "
                             f"got {tuple(images.shape)}; resize the chips to {size} px.")

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.ndim != 2 or tokens.shape[1] > self.config.context_length:
            raise InputError(f"token ids must be (batch, length <= "
                             f"{self.config.context_length}), got {tuple(tokens.shape)}; "
                             "tokenize with the model's tokenizer and context length.")

    def image_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Unnormalised contrastive embedding (B, E) and decoder image tokens (B, N, E)."""
        self._check_images(images)
        return self.visual(images)

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        pooled, _ = self.image_features(images)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        self._check_tokens(tokens)
        pooled, _ = self.text(tokens)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def caption_logits(self, image_tokens: Tensor, tokens: Tensor) -> Tensor:
        """Next-token logits after every position of ``tokens`` (B, L, vocab), no cache."""
        self._check_tokens(tokens)
        _, states = self.text(tokens)
        return self.text_decoder(states, image_tokens)

    def logit_scale_exp(self) -> Tensor:
        """The contrastive temperature, clamped so it cannot run away (CLIP: at most 100)."""
        return self.logit_scale.clamp(max=self.config.max_logit_scale).exp()

    def forward(self, images: Tensor, tokens: Tensor, *, compute_loss: bool = True
                ) -> dict[str, Any]:
        """Both objectives in one pass: the unimodal text states feed the multimodal half.

        ``logits[:, t]`` predicts ``labels[:, t] = tokens[:, t + 1]``.
        """
        self._check_tokens(tokens)
        pooled, image_tokens = self.image_features(images)
        text_pooled, states = self.text(tokens)
        out: dict[str, Any] = {
            "image_emb": F.normalize(pooled, dim=-1),
            "text_emb": F.normalize(text_pooled, dim=-1),
            "logits": self.text_decoder(states[:, :-1], image_tokens),
            "labels": tokens[:, 1:],
            "logit_scale": self.logit_scale_exp(),
        }
        if compute_loss:
            out["losses"] = urbanclip_loss(
                out["image_emb"], out["text_emb"], out["logit_scale"], out["logits"],
                out["labels"], padding=self.config.padding_mask(tokens)[:, 1:],
                lambda_con=self.config.lambda_con, lambda_lm=self.config.lambda_lm)
        return out

    def generate(self, images: Tensor, max_new_tokens: int = 30, strategy: str = "greedy",
                 **kwargs: Any) -> Tensor:
        """Caption token ids (B, T) starting with BOS; options: :func:`generate`."""
        return generate(self, images, max_new_tokens=max_new_tokens, strategy=strategy, **kwargs)
