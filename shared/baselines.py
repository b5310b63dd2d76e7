"""Naive forecasts every model is compared with (and that the edge falls back to without a model).

Each takes the slot series, the issue time T and the horizon H, and returns H values for the slots ending
T + 15 min … T + H·15 min, using only slots ending at or before T (NaN where the history is missing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shared.schema import SLOTS_PER_DAY
from shared.series import SlotSeries


def _targets(series: SlotSeries, issue_ns: int, horizon: int) -> np.ndarray:
    return series.index_of(issue_ns) + np.arange(1, horizon + 1)


def _at(series: SlotSeries, idx: np.ndarray, issue_idx: int) -> np.ndarray:
    out = np.full(len(idx), np.nan)
    ok = (idx >= 0) & (idx < len(series.values)) & (idx <= issue_idx)
    out[ok] = series.values[idx[ok]]
    return out


def persistence(series: SlotSeries, issue_ns: int, horizon: int) -> np.ndarray:
    last = series.index_of(issue_ns)
    return np.repeat(_at(series, np.array([last]), last), horizon)


def same_slot_days_ago(days: int) -> Callable[[SlotSeries, int, int], np.ndarray]:
    def forecast(series: SlotSeries, issue_ns: int, horizon: int) -> np.ndarray:
        idx = _targets(series, issue_ns, horizon)
        back = days
        out = _at(series, idx - back * SLOTS_PER_DAY, series.index_of(issue_ns))
        return out

    return forecast


def median_7_days(series: SlotSeries, issue_ns: int, horizon: int) -> np.ndarray:
    idx = _targets(series, issue_ns, horizon)
    last = series.index_of(issue_ns)
    lags = np.stack([_at(series, idx - k * SLOTS_PER_DAY, last) for k in range(1, 8)], axis=1)
    out = np.full(horizon, np.nan)
    ok = ~np.all(np.isnan(lags), axis=1)
    if ok.any():
        out[ok] = np.nanmedian(lags[ok], axis=1)
    return out


BASELINES: dict[str, Callable[[SlotSeries, int, int], np.ndarray]] = {
    "persistence": persistence,
    "same_slot_yesterday": same_slot_days_ago(1),
    "same_slot_last_week": same_slot_days_ago(7),
    "median_7_days": median_7_days,
}

# Which baseline the edge uses when it has no model (the best on the seed data for each horizon).
FALLBACK = {1: "persistence", 96: "median_7_days"}


# A day ahead is never the last slot repeated: on a fresh install that made "consumption next 24 h" 96 × the last
# 15 minutes (issue 25: 33.6 kWh in the test house, 50+ after a kettle). Without a day of history there is none.
DAILY = ("median_7_days", "same_slot_yesterday", "same_slot_last_week")


def fallback(series: SlotSeries, issue_ns: int, horizon: int) -> tuple[str, np.ndarray]:
    """The fallback forecast for this horizon; if its history is missing, the next baseline that has values
    (day-ahead horizons only take the same slot of earlier days: the median of the days there are). NaN values:
    not enough history for any."""
    first = FALLBACK.get(horizon, "persistence")
    allowed = [n for n in BASELINES if horizon == 1 or n in DAILY]
    order = [first] + [n for n in allowed if n != first]
    for name in order:
        values = BASELINES[name](series, issue_ns, horizon)
        if np.isfinite(values).all():
            return name, values
    return order[0], BASELINES[order[0]](series, issue_ns, horizon)
