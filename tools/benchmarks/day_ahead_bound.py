"""`make day-ahead-bound`: how much of the day-ahead error could the models' own inputs remove at all?

For each month (default June, July and August 2023), at the backtest's issue times (00:00 UTC, the next day's 96
slots), the day-ahead window's kWh inputs are computed with the edge's code (`shared.window.build_raw`: the 1-7
day lags, their median, the pooled quantiles, the last day's level and the last value). On the slots where the
target and every input are known, MAE relative to the best of yesterday / last week / 7-day median of:
- each pooled quantile alone;
- `linear_walk_forward`: a least-absolute-deviation linear blend of all inputs, refitted before each day on the
  28 days before it (what an online linear forecaster could do);
- `linear_hindsight`: the same blend fitted on the month itself, in-sample. No forecaster can know these weights
  in advance, so this is generous: a model that chooses among these inputs by one global rule should not expect
  to beat it by much.

Prints one JSON line: `{"months": {"2023-07": {"slots": …, "best_baseline": …, "pool7d8_q50": …,
"linear_walk_forward": …, "linear_hindsight": …}, …}}`. It trains nothing (about 10 s).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shared.schema import DAY_NS, SLOTS_PER_DAY
from shared.series import parse_time_ns
from shared.window import build_raw, is_kwh_feature, target
from tools.benchmarks.eval_rolling import MONTHS, month_bounds
from training.data import load
from training.plans import PLANS

ROOT = Path(__file__).resolve().parents[2]
CSV = str(ROOT / "data" / "seed_house" / "raw_data.csv")
WALK_FORWARD_DAYS = 28
BASELINES = ("lag_1d", "lag_7d", "median7")  # yesterday, last week, the 7-day median


def lad(x: np.ndarray, y: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Least-absolute-deviation coefficients (last one the intercept) by iteratively reweighted least squares."""
    a = np.c_[x, np.ones(len(x))]
    w = np.ones(len(y))
    for _ in range(iterations):
        coef = np.linalg.lstsq(a * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
        w = 1 / np.maximum(np.abs(y - a @ coef), 1e-4)
    return coef


def predict(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return np.c_[x, np.ones(len(x))] @ coef


def inputs(series, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """kWh inputs [slots, F] of the shipped day-ahead window (cnn-96's plan), targets, the day number of each slot,
    and the input names, for the days in [start, end) issued at 00:00 UTC."""
    spec = next(p for p in PLANS if p.name == "cnn-96").window()
    kwh = [i for i, n in enumerate(spec.features) if is_kwh_feature(spec.layout, n)]
    xs, ys, days = [], [], []
    for day, t in enumerate(range(start_ns, end_ns, DAY_NS)):
        raw, _ = build_raw(spec, series, t)
        xs.append(raw[:, kwh])
        ys.append(target(series, t, SLOTS_PER_DAY))
        days.append(np.full(SLOTS_PER_DAY, day))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(days), [spec.features[i] for i in kwh]


def month_bound(series, month: str) -> dict:
    start, end = (parse_time_ns(t) for t in month_bounds(month))
    x, y, day, names = inputs(series, start - WALK_FORWARD_DAYS * DAY_NS, end)
    known = np.isfinite(y) & np.isfinite(x).all(axis=1)
    scored = known & (day >= WALK_FORWARD_DAYS)
    maes = {b: float(np.abs(x[scored, names.index(b)] - y[scored]).mean()) for b in BASELINES}
    best = min(maes, key=maes.get)
    out: dict = {"slots": int(scored.sum()), "best_baseline": best}
    for i, name in enumerate(names):
        if name.startswith("pool"):
            out[name] = round(float(np.abs(x[scored, i] - y[scored]).mean()) / maes[best], 4)
    walk = np.full(len(y), np.nan)
    for d in np.unique(day[scored]):
        fit, today = known & (day >= d - WALK_FORWARD_DAYS) & (day < d), scored & (day == d)
        walk[today] = predict(x[today], lad(x[fit], y[fit]))
    out["linear_walk_forward"] = round(float(np.abs(walk[scored] - y[scored]).mean()) / maes[best], 4)
    hindsight = predict(x[scored], lad(x[scored], y[scored]))
    out["linear_hindsight"] = round(float(np.abs(hindsight - y[scored]).mean()) / maes[best], 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--months", nargs="+", default=list(MONTHS))
    args = ap.parse_args()
    series = load([CSV])
    print(json.dumps({"months": {m: month_bound(series, m) for m in args.months}}))


if __name__ == "__main__":
    main()
