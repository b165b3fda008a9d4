"""What every caption backend is: a named thing that turns one chip into text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class ChipInfo:
    """What a backend may know about a chip besides its pixels.

    ``band_names`` name the chip's channels (the first three are the display RGB; ``nir`` may
    follow). ``pixel_size_m`` is the ground size of one pixel, which decides what is resolvable.
    ``context`` holds optional per-cell facts from vector layers (e.g. POI counts by category).
    """

    cell_id: str
    band_names: tuple[str, ...] = ("red", "green", "blue")
    pixel_size_m: float = 4.0
    context: Mapping[str, Any] = field(default_factory=dict)


class Captioner(Protocol):
    """An image-to-text backend."""

    name: str

    def cache_key(self) -> str:
        """Identity of backend + model + prompt: a cached caption with another key is redone."""

    def caption(self, chip: np.ndarray, info: ChipInfo) -> str:
        """Describe one chip, ``(bands, y, x)`` uint8. Raises ``UrbangeoError`` subclasses."""
