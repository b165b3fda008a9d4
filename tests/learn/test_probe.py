"""Splits (random and spatial blocks), log-scale metrics and the MLP probe."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from urbangeo.errors import DataError, InputError
from urbangeo.learn.metrics import regression_metrics
from urbangeo.learn.probe import ProbeOptions, fit_probe
from urbangeo.learn.splits import grid_spacing, split_cells


def grid_xy(n_side: int, cell: float = 250.0) -> np.ndarray:
    """Centroids of an n x n grid of ``cell`` m squares (not at the origin)."""
    r, c = np.mgrid[0:n_side, 0:n_side]
    return np.column_stack([5e5 + (c.ravel() + 0.5) * cell, 4e6 + (r.ravel() + 0.5) * cell])


def test_random_split_follows_fractions_and_seed() -> None:
    xy = grid_xy(10)
    labels = split_cells(xy, "random", seed=4)
    assert [int((labels == s).sum()) for s in ("train", "val", "test")] == [60, 20, 20]
    assert np.array_equal(labels, split_cells(xy, "random", seed=4))
    assert not np.array_equal(labels, split_cells(xy, "random", seed=5))
    odd = split_cells(xy[:7], "random", seed=0, fractions=(0.5, 0.25, 0.25))
    assert sorted(odd.tolist()).count("train") in (3, 4) and set(odd) == {"train", "val", "test"}


def test_block_split_keeps_blocks_whole() -> None:
    xy = grid_xy(24)  # 6 km: 36 blocks of 4 x 4 cells
    assert grid_spacing(xy) == pytest.approx(250.0)
    labels = split_cells(xy, "blocks", seed=1)
    block = [tuple(k) for k in np.floor((xy - xy.min(axis=0)) / 1000.0).astype(int)]
    per_block: dict[tuple, set] = {}
    for key, label in zip(block, labels, strict=True):
        per_block.setdefault(key, set()).add(label)
    assert len(per_block) == 36 and all(len(v) == 1 for v in per_block.values())
    counts = [int((labels == s).sum()) for s in ("train", "val", "test")]
    assert counts[0] == pytest.approx(0.6 * 576, abs=16) and min(counts) >= 96
    assert np.array_equal(labels, split_cells(xy, "blocks", seed=1))
    assert not np.array_equal(labels, split_cells(xy, "blocks", seed=2))
    coarse = split_cells(xy, "blocks", seed=1, block_size_m=2000.0)  # 9 blocks
    assert len({(tuple(k), lab) for k, lab in zip(
        np.floor((xy - xy.min(axis=0)) / 2000.0).astype(int), coarse, strict=True)}) == 9


def test_split_mistakes_are_clear() -> None:
    with pytest.raises(DataError, match="too few to fill"):
        split_cells(grid_xy(4), "blocks", seed=0)  # a single block
    with pytest.raises(InputError, match="unknown split 'kfold'"):
        split_cells(grid_xy(4), "kfold", seed=0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="summing to 1"):
        split_cells(grid_xy(4), "random", seed=0, fractions=(0.5, 0.2, 0.2))


def test_metrics_match_sklearn_and_skip_nan() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(3, 1, 50)
    p = t + rng.normal(0, 0.5, 50)
    m = regression_metrics(t, p)
    assert m.n == 50
    assert m.r2 == pytest.approx(r2_score(t, p))
    assert m.rmse == pytest.approx(np.sqrt(mean_squared_error(t, p)))
    assert m.mae == pytest.approx(mean_absolute_error(t, p))
    t_nan, p_nan = t.copy(), p.copy()
    t_nan[:5], p_nan[:3] = np.nan, np.inf  # no truth: left out, whatever was predicted
    assert regression_metrics(t_nan, p_nan).r2 == pytest.approx(r2_score(t[5:], p[5:]))
    assert regression_metrics(t_nan, p_nan).n == 45
    p_nan[7] = np.nan  # a failed prediction where there is a truth
    assert np.isnan(regression_metrics(t_nan, p_nan).rmse)
    assert regression_metrics([], []).n == 0 and np.isnan(regression_metrics([1.0], [2.0]).r2)


def _linear_city(n: int = 600, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and a population-like target whose log is linear in them plus 10% noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d) / np.sqrt(d)
    return x, np.expm1(4.0 + x @ w + 0.1 * rng.normal(size=n))


def test_probe_learns_a_log_linear_target_deterministically() -> None:
    x, y = _linear_city()
    y[:30] = np.nan
    y[30:40] = -5.0  # nodata written as a negative: left out too
    split = split_cells(grid_xy(25)[:600], "random", seed=0)
    fit = fit_probe(x, y, split, seed=0)
    test = fit.metrics("test")
    assert test.r2 > 0.8, test
    assert fit.counts["unlabelled"] == 40 and fit.counts["labelled"] == 560
    assert test.n == int(((split == "test") & np.isfinite(fit.y_log)).sum())
    assert fit.metrics("train").r2 >= test.r2 - 0.05
    again = fit_probe(x, y, split, seed=0)
    np.testing.assert_array_equal(fit.predict_log(x), again.predict_log(x))
    natural = fit.predict(x[:50])
    assert (natural >= 0).all()
    np.testing.assert_allclose(natural, np.clip(np.expm1(fit.predict_log(x[:50])), 0, None))


def test_minibatch_and_no_val_variants() -> None:
    x, y = _linear_city(n=300, d=16, seed=1)
    split = split_cells(grid_xy(18)[:300], "random", seed=1)
    options = ProbeOptions(batch_size=64, max_epochs=150)
    fit = fit_probe(x, y, split, seed=3, options=options)
    assert fit.metrics("test").r2 > 0.8 and fit.best_epoch <= fit.epochs
    np.testing.assert_array_equal(fit.fitted_log,
                                  fit_probe(x, y, split, seed=3, options=options).fitted_log)
    no_val = np.where(split == "val", "train", split)
    fixed = fit_probe(x, y, no_val, options=ProbeOptions(max_epochs=40))
    assert fixed.epochs == fixed.best_epoch == 40 and fixed.counts["val"] == 0


def test_probe_refuses_targets_it_cannot_learn() -> None:
    x, y = _linear_city(n=40, d=8)
    split = split_cells(grid_xy(7)[:40], "random", seed=0)
    with pytest.raises(DataError, match="no usable value"):
        fit_probe(x, np.full(40, np.nan), split)
    few = np.full(40, np.nan)
    few[np.flatnonzero(split == "train")[:3]] = 10.0
    with pytest.raises(DataError, match="only 3 training cells"):
        fit_probe(x, few, split)
    with pytest.raises(InputError, match="same cells"):
        fit_probe(x[:10], y, split)
    with pytest.raises(InputError, match="unknown split 'dev'"):
        fit_probe(x, y, split).metrics("dev")


def test_split_of_only_the_labelled_cells() -> None:
    xy = np.stack(np.meshgrid(np.arange(10) * 250.0, np.arange(10) * 250.0), -1).reshape(-1, 2)
    labelled = np.arange(100) % 3 == 0
    for kind in ("random", "blocks"):
        labels = split_cells(xy, kind, 0, only=labelled)
        assert set(labels[~labelled]) == {""}
        assert set(labels[labelled]) == {"train", "val", "test"}
    labels = split_cells(xy, "random", 0, only=labelled)
    assert (labels == "test").sum() == round(0.2 * labelled.sum())
    with pytest.raises(DataError, match="no cell has a value"):
        split_cells(xy, "blocks", 0, only=np.zeros(100, bool))


def test_a_feature_constant_on_train_cannot_blow_up_a_prediction() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3)).astype(np.float32)
    split = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10)
    features[:50, 2] = 0.5 + 1e-5 * rng.normal(size=50)  # near-constant where it learns ...
    features[50:, 2] = 50.0  # ... far off on the test cells
    y = np.expm1(features[:, 0] + 3)
    fit = fit_probe(features, y, split, seed=0)
    assert np.abs(fit.predict_log(features)[50:] - np.log1p(y[50:])).max() < 20
