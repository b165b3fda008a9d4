"""UrbanCLIP's training objective: contrastive alignment plus captioning (paper eq. 5-7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_IGNORE = -100  # a label no vocabulary uses: cross_entropy skips it


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE: pair ``i`` is the positive of row and column ``i``.

    Embeddings must already be L2-normalised; ``logit_scale`` is the (clamped) exp temperature.
    The two directions are averaged as in the official code (open_clip's ClipLoss); the paper
    writes their sum, a factor of 2 that ``lambda_con`` can absorb.
    """
    logits = logit_scale * image_emb @ text_emb.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def caption_loss(logits: Tensor, labels: Tensor, padding: Tensor) -> Tensor:
    """Next-token cross-entropy; ``logits[:, t]`` predicts ``labels[:, t]``.

    The shift is done by the caller (``labels = tokens[:, 1:]``, logits from ``tokens[:, :-1]``),
    so all three tensors have the same length here. Labels where ``padding`` is True are left
    out: the caller finds them with :meth:`UrbanCLIPConfig.padding_mask`, because an id alone
    cannot say (CLIP's pad id 0 is also the token ``!``).
    """
    kept = labels.masked_fill(padding, _IGNORE)
    return F.cross_entropy(logits.transpose(1, 2).float(), kept, ignore_index=_IGNORE)


def urbanclip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, logits: Tensor,
                   labels: Tensor, *, padding: Tensor, lambda_con: float = 1.0,
                   lambda_lm: float = 1.0) -> dict[str, Tensor]:
    """``total = lambda_con * con + lambda_lm * lm`` (paper and official code: 1 and 1)."""
    con = contrastive_loss(image_emb, text_emb, logit_scale)
    lm = caption_loss(logits, labels, padding)
    return {"total": lambda_con * con + lambda_lm * lm, "con": con, "lm": lm}
