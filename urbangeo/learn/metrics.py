"""Regression metrics of the paper (§4.1.3): R², RMSE and MAE, computed on the log1p scale.

Indicators such as population or GDP span orders of magnitude; on the log scale a metric weighs
a village's error like a downtown's instead of being dominated by the largest cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """R² (1 - SS_res / SS_tot), RMSE and MAE over ``n`` cells; NaN when undefined."""

    r2: float
    rmse: float
    mae: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
    """Metrics of ``y_pred`` against ``y_true``, both already on the log1p scale.

    Cells without a finite truth are left out (``n`` counts the rest). A prediction that is
    not finite where the truth is makes every metric NaN: a failed prediction must not make
    the score look better by dropping out. R² is NaN when fewer than two cells remain or the
    truth is constant.
    """
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} != {p.size}")
    ok = np.isfinite(t)
    t, p = t[ok], p[ok]
    if not t.size or not np.isfinite(p).all():
        return Metrics(np.nan, np.nan, np.nan, int(t.size))
    err = t - p
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float((err**2).sum()) / ss_tot if t.size > 1 and ss_tot > 0 else np.nan
    return Metrics(r2=r2, rmse=float(np.sqrt((err**2).mean())), mae=float(np.abs(err).mean()),
                   n=int(t.size))
