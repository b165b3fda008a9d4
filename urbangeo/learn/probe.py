"""The predictor MLP of the paper's predict stage (§3.3): frozen features -> one indicator.

Targets are log1p-transformed (indicators span orders of magnitude) and z-scored, features
standardised, both with training-split statistics only, so nothing about val or test leaks into
the fit. A small MLP trains full-batch with early stopping on the val split; everything is
seeded, so the same inputs give the same probe. One fit of ~600 cells takes well under a
second on a CPU, which lets the evaluation harness fit thousands of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from urbangeo.errors import DataError, InputError
from urbangeo.learn.metrics import Metrics, regression_metrics
from urbangeo.learn.splits import SPLITS

if TYPE_CHECKING:
    import torch
    from torch import nn

MIN_TRAIN_CELLS = 5
FEATURE_CLIP = 10.0
"""Standardised features are clipped to +-10 train standard deviations: a feature almost
constant on the train cells (a rare caption term's SVD axis) would otherwise blow up on a test
cell and send the MLP's prediction thousands of log units away."""


@dataclass(frozen=True)
class ProbeOptions:
    """Hyper-parameters of the MLP probe (defaults tuned for a few hundred to a few thousand
    cells with 64-1024 features)."""

    hidden: int = 256
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-3
    max_epochs: int = 400
    patience: int = 30
    batch_size: int | None = None
    """``None``: full batch (fast and deterministic for small data); else mini-batches."""


@dataclass
class ProbeFit:
    """A fitted probe plus what it saw: predictions for new features, metrics per split."""

    net: nn.Module
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean: float
    target_std: float
    split: np.ndarray
    y_log: np.ndarray
    fitted_log: np.ndarray
    epochs: int
    best_epoch: int
    counts: dict[str, int] = field(default_factory=dict)

    def predict_log(self, features: np.ndarray) -> np.ndarray:
        """Predictions in log1p units (float64)."""
        import torch

        x = _standardise(features, self.feature_mean, self.feature_std)
        with torch.inference_mode():
            z = self.net(torch.from_numpy(x.astype(np.float32))).squeeze(-1).double().numpy()
        return z * self.target_std + self.target_mean

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions in the indicator's natural units (expm1, negatives clipped to 0)."""
        return np.clip(np.expm1(self.predict_log(features)), 0.0, None)

    def metrics(self, split: str = "test") -> Metrics:
        """R², RMSE, MAE (log1p scale) over the labelled cells of ``split``."""
        if split not in SPLITS:
            raise InputError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
        rows = (self.split == split) & np.isfinite(self.y_log)
        return regression_metrics(self.y_log[rows], self.fitted_log[rows])


def _standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    x = (np.asarray(features, dtype=np.float32) - mean) / std
    return np.clip(x, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)


def labelled_log(y_natural: np.ndarray) -> np.ndarray:
    """log1p of the usable targets; NaN where the target is missing, infinite or negative."""
    y = np.asarray(y_natural, dtype=np.float64)
    usable = np.isfinite(y) & (y >= 0)
    out = np.full(y.shape, np.nan)
    out[usable] = np.log1p(y[usable])
    return out


def _check_inputs(features: np.ndarray, y_log: np.ndarray, split: np.ndarray) -> None:
    if features.ndim != 2 or len(features) != len(y_log) or len(split) != len(y_log):
        raise InputError(f"features {features.shape}, targets ({len(y_log)},) and split "
                         f"({len(split)},) must describe the same cells")
    if not np.isfinite(features).all():
        raise DataError("the features contain NaN or infinite values: re-embed the cells")
    labelled = np.isfinite(y_log)
    if not labelled.any():
        raise DataError("the target has no usable value (all NaN or negative): check the "
                        "indicator raster covers the cells (`urbangeo indicators`)")
    n_train = int((labelled & (split == "train")).sum())
    if n_train < MIN_TRAIN_CELLS:
        raise DataError(f"only {n_train} training cells have a target value (need at least "
                        f"{MIN_TRAIN_CELLS}): use more cells or a split with a larger train "
                        "fraction")


def fit_probe(features: np.ndarray, y_natural: np.ndarray, split: np.ndarray, *, seed: int = 0,
              options: ProbeOptions = ProbeOptions()) -> ProbeFit:
    """Fit the MLP on the labelled "train" cells, stopping early on the "val" cells.

    ``y_natural``: the indicator in its own units; NaN or negative values are left out of the
    fit and the metrics (counted in ``counts["unlabelled"]``). Without labelled val cells the
    probe trains for ``max_epochs``.
    """
    import torch

    features = np.asarray(features, dtype=np.float32)
    split = np.asarray(split).astype(str)
    y_log = labelled_log(y_natural)
    _check_inputs(features, y_log, split)
    labelled = np.isfinite(y_log)
    train = labelled & (split == "train")
    val = labelled & (split == "val")
    f_mean = features[train].mean(axis=0)
    f_std = features[train].std(axis=0)
    f_std[f_std < 1e-8] = 1.0
    t_mean, t_std = float(y_log[train].mean()), float(y_log[train].std())
    t_std = t_std if t_std > 1e-12 else 1.0
    x = torch.from_numpy(_standardise(features, f_mean, f_std))
    z = torch.from_numpy(((np.nan_to_num(y_log) - t_mean) / t_std).astype(np.float32))
    train_idx = torch.from_numpy(np.flatnonzero(train))
    val_idx = torch.from_numpy(np.flatnonzero(val))

    threads = torch.get_num_threads()
    # One thread: the matrices are tiny, and on a busy machine OpenMP's waiting between threads
    # made a 0.5 s fit take 30 s.
    torch.set_num_threads(1)
    try:
        net, epoch, best_epoch = _train(x, z, train_idx, val_idx, seed, options)
    finally:
        torch.set_num_threads(threads)
    fit = ProbeFit(net=net, feature_mean=f_mean, feature_std=f_std, target_mean=t_mean,
                   target_std=t_std, split=split, y_log=y_log, fitted_log=np.empty(0),
                   epochs=epoch, best_epoch=best_epoch,
                   counts={"labelled": int(labelled.sum()), "unlabelled": int((~labelled).sum()),
                           **{s: int((labelled & (split == s)).sum()) for s in SPLITS}})
    fit.fitted_log = fit.predict_log(features)
    return fit


def _train(x: torch.Tensor, z: torch.Tensor, train_idx: torch.Tensor, val_idx: torch.Tensor,
           seed: int, options: ProbeOptions) -> tuple[nn.Module, int, int]:
    """The seeded training loop; returns the net (best val epoch's weights), epochs run and
    the best epoch."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(x.shape[1], options.hidden), nn.ReLU(),
                            nn.Dropout(options.dropout), nn.Linear(options.hidden, 1))
        opt = torch.optim.AdamW(net.parameters(), lr=options.lr,
                                weight_decay=options.weight_decay)
        batch = options.batch_size or len(train_idx)
        best = (float("inf"), 0, {k: v.clone() for k, v in net.state_dict().items()})
        epoch = 0
        for epoch in range(1, options.max_epochs + 1):
            net.train()
            order = train_idx
            if batch < len(train_idx):
                order = train_idx[torch.randperm(len(train_idx))]
            for start in range(0, len(order), batch):
                rows = order[start:start + batch]
                loss = nn.functional.mse_loss(net(x[rows]).squeeze(-1), z[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not len(val_idx):
                continue
            net.eval()
            with torch.no_grad():
                val_loss = float(nn.functional.mse_loss(net(x[val_idx]).squeeze(-1), z[val_idx]))
            if val_loss < best[0]:
                best = (val_loss, epoch, {k: v.clone() for k, v in net.state_dict().items()})
            elif epoch - best[1] >= options.patience:
                break
        if len(val_idx):
            net.load_state_dict(best[2])
        net.eval()
    return net, epoch, best[1] if len(val_idx) else epoch
