"""The one place a user's ``--device`` becomes a torch device (train, embed, baselines)."""

from __future__ import annotations

import torch

from urbangeo.errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU when torch sees one, else the CPU; InputError for unusable names."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but torch sees no CUDA GPU: use --device "
                         "cpu (or auto)")
    return device
