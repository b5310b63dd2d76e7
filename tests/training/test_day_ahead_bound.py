"""tools/benchmarks/day_ahead_bound.py: the least-absolute-deviation fit behind the README's bound on July."""

import numpy as np

from tools.benchmarks.day_ahead_bound import CSV, lad, month_bound, predict
from training.data import load


def test_lad_ignores_outliers_that_pull_least_squares():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (400, 2))
    y = 2 * x[:, 0] - x[:, 1] + 0.5 + rng.laplace(0, 0.01, 400)
    y[:40] += 5  # one in ten far off, all upwards
    coef = lad(x, y)
    assert np.allclose(coef, [2, -1, 0.5], atol=0.05)
    squares = np.linalg.lstsq(np.c_[x, np.ones(400)], y, rcond=None)[0]
    assert abs(squares[2] - 0.5) > 0.3  # what the test would not notice with least squares
    assert np.abs(predict(x, coef) - y).mean() < np.abs(np.c_[x, np.ones(400)] @ squares - y).mean()


def test_hindsight_blend_is_no_worse_than_any_single_input():
    """In-sample LAD minimises the MAE over all blends, and every pooled quantile alone is one of them."""
    out = month_bound(load([CSV]), "2023-07")
    assert out["slots"] > 2500 and out["best_baseline"] in ("lag_1d", "lag_7d", "median7")
    pools = {k: v for k, v in out.items() if k.startswith("pool")}
    assert len(pools) == 8
    assert out["linear_hindsight"] <= min(pools.values()) + 1e-3
    assert 0.5 < out["linear_hindsight"] < out["linear_walk_forward"]
