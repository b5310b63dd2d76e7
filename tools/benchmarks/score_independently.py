"""Score backtest CSVs against the raw meter with pandas alone: a cross-check that shares no code with the project.

    python tools/benchmarks/score_independently.py [--exclude-days DAY,DAY…] RAW.csv FORECASTS.csv [FORECASTS.csv …]

Actuals: the counter's difference on a regular 15-minute grid (annotation rows skipped, duplicates → last value,
negative steps — the meter replacement — and steps over 5 kWh dropped). Baselines recomputed from those actuals:
persistence (the slot before the target) and the median of the same slot on the 7 previous days, either `strict`
(all 7 days known, as the project's `evaluate` does) or `nan_skip` (median of the known days), the same slot
yesterday and last week. Prints one JSON object: per file and baseline, the slots scored and the model's MAE and
RMSE relative to the baseline's; `day_ahead_best`: the model's MAE relative to the best of yesterday, last week and
the strict 7-day median on the slots all three know; `p10_p90` (files with p10_kwh/p90_kwh columns): the share of
actual values inside the band and its mean width, and `climatology_p10_p90` the same for the 10-90 % quantiles of
the same slot over the previous 28 days (at least 7 known), on the same slots. The climatological band covers less
than 80 % (28 values of one slot), so its width is not comparable as it is: `climatology_recalibrated_p10_p90` gives
it the recalibration the edge gives the models' bands — both half-widths (around the 28 days' median) times the
80 % quantile of the factors that would have covered the file's own earlier targets known at the row's issue time,
over the last 7 days (factor 1 before a day of them) — so that both bands are compared at about the same coverage.
`--exclude-days 2022-12-24,2022-12-25`: leave out the target slots of those UTC days (to see what a few named days,
e.g. Christmas, cost a month's score).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from shared.schema import DAY_NS


def actuals(raw_csv: str) -> pd.Series:
    raw = pd.read_csv(raw_csv, comment="#")[["_time", "_value"]].dropna()
    raw["_time"] = pd.to_datetime(raw["_time"], utc=True)
    counter = raw.groupby("_time")["_value"].last().sort_index()
    grid = pd.date_range(counter.index.min(), counter.index.max(), freq="15min")
    d = counter.reindex(grid).diff()
    d[(d < 0) | (d > 5)] = np.nan
    return d


def score(d: pd.Series, forecasts_csv: str, exclude_days: frozenset[str] = frozenset()) -> dict:
    rows = pd.read_csv(forecasts_csv)
    rows = rows.set_index(pd.to_datetime(rows["target_time"], utc=True))
    rows = rows[~rows.index.strftime("%Y-%m-%d").isin(list(exclude_days))]
    fc = rows["value_kwh"]
    y = d.reindex(fc.index)
    days = pd.concat([d.shift(k * 96).reindex(fc.index) for k in range(1, 8)], axis=1)
    baselines = {"median_7_days_strict": days.median(axis=1, skipna=False),
                 "median_7_days_nan_skip": days.median(axis=1, skipna=True),
                 "persistence": d.shift(1).reindex(fc.index),
                 "same_slot_yesterday": days.iloc[:, 0], "same_slot_last_week": days.iloc[:, 6]}
    out = {}
    for name, base in baselines.items():
        ok = y.notna() & base.notna() & fc.notna()
        err, berr = fc[ok] - y[ok], base[ok] - y[ok]
        out[name] = {"slots": int(ok.sum()),
                     "mae_ratio": round(float(err.abs().mean() / berr.abs().mean()), 4),
                     "rmse_ratio": round(float(np.sqrt((err ** 2).mean() / (berr ** 2).mean())), 4)}
    day = ["same_slot_yesterday", "same_slot_last_week", "median_7_days_strict"]
    ok = y.notna() & fc.notna() & pd.concat([baselines[b] for b in day], axis=1).notna().all(axis=1)
    maes = {b: float((baselines[b][ok] - y[ok]).abs().mean()) for b in day}
    best = min(maes, key=maes.get)
    out["day_ahead_best"] = {"baseline": best, "slots": int(ok.sum()),
                             "mae_ratio": round(float((fc[ok] - y[ok]).abs().mean() / maes[best]), 4)}
    lo, hi = rows.get("p10_kwh"), rows.get("p90_kwh")
    ok = y.notna() & lo.notna() & hi.notna() if lo is not None and hi is not None else None
    if ok is not None and ok.any():
        month = pd.concat([d.shift(k * 96).reindex(fc.index) for k in range(1, 29)], axis=1)
        enough = month.notna().sum(axis=1) >= 7
        clim_lo, clim_hi = month.quantile(0.1, axis=1), month.quantile(0.9, axis=1)
        ok &= enough
        out["p10_p90"] = band(y[ok], lo[ok], hi[ok])
        out["climatology_p10_p90"] = band(y[ok], clim_lo[ok], clim_hi[ok])
        mid = month.median(axis=1)
        r_lo, r_hi = recalibrated(y, mid, clim_lo, clim_hi, pd.to_datetime(rows["issued_at"], utc=True))
        out["climatology_recalibrated_p10_p90"] = band(y[ok], r_lo[ok], r_hi[ok])
    return out


def recalibrated(y: pd.Series, mid: pd.Series, lo: pd.Series, hi: pd.Series, issued: pd.Series
                 ) -> tuple[pd.Series, pd.Series]:
    """The band [lo, hi] around `mid` with both half-widths times, per row, the 80 % quantile of the factors that
    would have covered the rows whose targets ended in the 7 days up to the row's issue time (1 with fewer than 96)."""
    up, down = (hi - mid).to_numpy(), (mid - lo).to_numpy()
    a, m = y.to_numpy(), mid.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(a >= m, (a - m) / up, (m - a) / down)
    need = np.where((a == m), 0.0, need)
    target, issue = pd.DatetimeIndex(y.index).asi8, pd.DatetimeIndex(issued).asi8
    factor = np.ones(len(y))
    week = 7 * DAY_NS
    for t in np.unique(issue):
        rows = issue == t
        known = (target <= t) & (target > t - week) & ~np.isnan(need)
        if known.sum() >= 96:
            factor[rows] = min(max(np.quantile(np.minimum(need[known], 30.0), 0.8), 0.5), 3.0)
    return (pd.Series(np.clip(m - factor * down, 0, None), index=y.index),
            pd.Series(m + factor * up, index=y.index))


def band(y: pd.Series, lo: pd.Series, hi: pd.Series) -> dict:
    return {"slots": int(len(y)), "coverage": round(float(((y >= lo) & (y <= hi)).mean()), 4),
            "width_kwh": round(float((hi - lo).mean()), 5)}


def main(argv: list[str]) -> None:
    exclude: frozenset[str] = frozenset()
    if argv[:1] == ["--exclude-days"] and len(argv) > 1:
        exclude, argv = frozenset(argv[1].split(",")), argv[2:]
    if len(argv) < 2:
        sys.exit(__doc__)
    d = actuals(argv[0])
    print(json.dumps({f: score(d, f, exclude) for f in argv[1:]}))


if __name__ == "__main__":
    main(sys.argv[1:])
