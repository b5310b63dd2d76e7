"""Score backtest CSVs against the raw meter with pandas alone: a cross-check that shares no code with the project.

    python tools/benchmarks/score_independently.py RAW.csv FORECASTS.csv [FORECASTS.csv …]

Actuals: the counter's difference on a regular 15-minute grid (annotation rows skipped, duplicates → last value,
negative steps — the meter replacement — and steps over 5 kWh dropped). Baselines recomputed from those actuals:
persistence (the slot before the target) and the median of the same slot on the 7 previous days, either `strict`
(all 7 days known, as the project's `evaluate` does) or `nan_skip` (median of the known days). Prints one JSON
object: per file and baseline, the slots scored and the model's MAE and RMSE relative to the baseline's.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd


def actuals(raw_csv: str) -> pd.Series:
    raw = pd.read_csv(raw_csv, comment="#")[["_time", "_value"]].dropna()
    raw["_time"] = pd.to_datetime(raw["_time"], utc=True)
    counter = raw.groupby("_time")["_value"].last().sort_index()
    grid = pd.date_range(counter.index.min(), counter.index.max(), freq="15min")
    d = counter.reindex(grid).diff()
    d[(d < 0) | (d > 5)] = np.nan
    return d


def score(d: pd.Series, forecasts_csv: str) -> dict:
    fc = pd.read_csv(forecasts_csv)
    fc = fc.set_index(pd.to_datetime(fc["target_time"], utc=True))["value_kwh"]
    y = d.reindex(fc.index)
    days = pd.concat([d.shift(k * 96).reindex(fc.index) for k in range(1, 8)], axis=1)
    baselines = {"median_7_days_strict": days.median(axis=1, skipna=False),
                 "median_7_days_nan_skip": days.median(axis=1, skipna=True),
                 "persistence": d.shift(1).reindex(fc.index)}
    out = {}
    for name, base in baselines.items():
        ok = y.notna() & base.notna() & fc.notna()
        err, berr = fc[ok] - y[ok], base[ok] - y[ok]
        out[name] = {"slots": int(ok.sum()),
                     "mae_ratio": round(float(err.abs().mean() / berr.abs().mean()), 4),
                     "rmse_ratio": round(float(np.sqrt((err ** 2).mean() / (berr ** 2).mean())), 4)}
    return out


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    d = actuals(argv[0])
    print(json.dumps({f: score(d, f) for f in argv[1:]}))


if __name__ == "__main__":
    main(sys.argv[1:])
