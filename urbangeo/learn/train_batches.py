"""Which cells each training step sees, and how their chips are turned: a pure function of
(seed, epoch, batch position).

Nothing here keeps random state between calls, so a run resumed from a checkpoint in the
middle of an epoch replays exactly the batches and flips an uninterrupted run would have used.
"""

from __future__ import annotations

import numpy as np

# Independent random streams, all derived from the run's seed.
_SPLIT, _ORDER, _AUGMENT = 0, 1, 2


def train_val_positions(n: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training and validation cells (each sorted); at least one validation
    cell when ``val_frac`` > 0."""
    n_val = max(1, round(n * val_frac)) if val_frac > 0 else 0
    order = np.random.default_rng([seed, _SPLIT]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """A shuffled partition of ``range(n)`` into batches for ``epoch``.

    A trailing batch of one is dropped (its contrastive loss is zero by construction); the
    cell comes back in another epoch's order.
    """
    order = np.random.default_rng([seed, _ORDER, epoch]).permutation(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    """``len(epoch_batches(n, batch_size, ...))`` without drawing the order."""
    full, rest = divmod(n, batch_size)
    return full + (rest >= 2 or full == 0)


def augment(chips: np.ndarray, seed: int, epoch: int, batch: int) -> np.ndarray:
    """Each uint8 chip (n, C, H, W) turned by one of the 8 symmetries of the square.

    Overhead imagery has no "up": any rotation by 90 degrees, with or without a mirror, shows a
    plausible scene with the same caption. Colours are left alone, since captions name them.
    """
    ops = np.random.default_rng([seed, _AUGMENT, epoch, batch]).integers(0, 8, len(chips))
    out = np.empty_like(chips)
    for i, (chip, op) in enumerate(zip(chips, ops, strict=True)):
        turned = np.rot90(chip, k=int(op) % 4, axes=(-2, -1))
        out[i] = turned[..., ::-1] if op >= 4 else turned
    return out
