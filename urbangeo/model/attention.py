"""The one attention function every attention in the model calls.

Shapes: ``q`` (B, H, Lq, D); ``k``, ``v`` (B, H, Lk, D). ``key_padding_mask`` is a bool
(B, Lk) tensor, True where a key is padding and must be ignored (nn.MultiheadAttention's
convention). ``causal`` aligns the mask bottom-right (query i sees keys j <= i + Lk - Lq), the
FlashAttention-2 convention, so one call serves both full sequences and KV-cached decoding.
Rows whose keys are all masked return zeros, never NaN.

Backends: ``"triton"`` is our fused kernel (:mod:`urbangeo.model.triton_attention`), ``"sdpa"``
is PyTorch's ``scaled_dot_product_attention``, ``"auto"`` (the default) takes Triton for CUDA
tensors it supports and SDPA otherwise. Pick one per call (``backend=``) or for the process with
the environment variable ``URBANGEO_ATTENTION``.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from urbangeo.errors import InputError

ENV_VAR = "URBANGEO_ATTENTION"
BACKENDS = ("auto", "triton", "sdpa")


class AttentionBackendError(InputError, ValueError):
    """An unknown attention backend, or "triton" forced where it cannot run."""


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


def resolve_backend(backend: str | None = None) -> str:
    """The requested backend name: the argument, else ``$URBANGEO_ATTENTION``, else "auto"."""
    name = os.environ.get(ENV_VAR, "auto") if backend is None else backend
    name = name.strip().lower()
    if name not in BACKENDS:
        source = f"${ENV_VAR}" if backend is None else "backend"
        raise AttentionBackendError(
            f"unknown attention backend {name!r} (from {source}); use one of {', '.join(BACKENDS)}")
    return name


@functools.cache
def _triton_kernels() -> ModuleType | str:
    """The kernel module, or why it cannot be used (imported once, on first use).

    Any exception counts, not just ImportError: a Triton too old or too new for the module, or a
    broken CUDA driver, fails with AttributeError, RuntimeError and the like, and "auto" must
    then fall back to SDPA rather than fail every GPU forward.
    """
    try:
        return importlib.import_module("urbangeo.model.triton_attention")
    except Exception as exc:  # every failure becomes the reason, see above
        return (f"the Triton kernels cannot be loaded ({type(exc).__name__}: {exc}); install a "
                "working triton or use backend 'sdpa'")


def select_backend(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                   backend: str | None = None) -> tuple[str, str | None]:
    """Which backend :func:`attention` runs for these inputs, and why not Triton (or None).

    Raises :class:`AttentionBackendError` for an unknown name, or when "triton" is forced
    where it cannot run at all (Triton missing; CPU tensors without ``TRITON_INTERPRET=1``).
    """
    name = resolve_backend(backend)
    if name == "sdpa":
        return "sdpa", "requested"
    if name == "auto" and not q.is_cuda:
        return "sdpa", f"tensors on {q.device.type}, not CUDA"
    kernels = _triton_kernels()
    if isinstance(kernels, str):
        if name == "triton":
            raise AttentionBackendError(kernels)
        return "sdpa", kernels
    if name == "triton" and not (q.is_cuda or kernels.INTERPRETED):
        raise AttentionBackendError(
            f"attention backend 'triton' needs CUDA tensors (got {q.device.type}); run on a GPU, "
            f"set TRITON_INTERPRET=1 before importing triton (slow, for tests), or use 'sdpa'")
    reason = kernels.unsupported_reason(q, k, v, key_padding_mask)
    return ("sdpa", reason) if reason else ("triton", None)


def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
              key_padding_mask: Tensor | None = None, scale: float | None = None,
              backend: str | None = None) -> Tensor:
    """Scaled dot-product attention through urbangeo's dispatch (see module docstring).

    A forced "triton" on inputs the kernel does not cover (e.g. head dim 48) warns with the
    reason and runs SDPA, so a model with one odd layer still trains.
    """
    if backend is None and not q.is_cuda and ENV_VAR not in os.environ:
        return _sdpa(q, k, v, causal, key_padding_mask, scale)  # the CPU default, kept lean
    name, reason = select_backend(q, k, v, key_padding_mask, backend)
    if name == "triton":
        return _triton_kernels().flash_attention(q, k, v, causal=causal,
                                                 key_padding_mask=key_padding_mask, scale=scale)
    if resolve_backend(backend) == "triton":
        warnings.warn(f"attention backend 'triton' cannot run this call: {reason}; using SDPA",
                      RuntimeWarning, stacklevel=2)
    return _sdpa(q, k, v, causal, key_padding_mask, scale)
