"""What the house draws when nobody is home: the day-ahead forecast for slots the occupants said they are away.

Learned from the house's own history, one implementation for the edge and any backtest: for each target slot,
quantiles of the same time of day ±1 hour over the previous 28 days (only slots known at the issue time):
P50 = the 10 % quantile (an empty house still runs the fridge, standby loads, the heating's pumps: the low end of
what the slot drew while people were home), band P10 = the 2 % and P90 = the 25 % quantile.
These levels are a documented choice, not calibrated: the seed year has no empty-house period to fit them on
(its lowest day still draws 22 kWh). With fewer than 24 known slots in the pool, the values are NaN and the
caller keeps the model's forecast.
"""

from __future__ import annotations

import numpy as np

from shared.schema import SLOTS_PER_DAY
from shared.series import SlotSeries
from shared.window import nan_quantiles

DAYS = 28
HALF_WIDTH = 4  # slots: ±1 hour
QUANTILES = (0.02, 0.10, 0.25)  # P10, P50, P90 of the empty-house forecast
MIN_KNOWN = 24


def profile(series: SlotSeries, issue_ns: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p10, p50, p90) kWh of an empty house for the `horizon` slots after issue_ns."""
    last = series.index_of(issue_ns)
    idx = last + np.arange(1, horizon + 1)
    offsets = (-SLOTS_PER_DAY * np.arange(1, DAYS + 1)[:, None]
               + np.arange(-HALF_WIDTH, HALF_WIDTH + 1)[None, :]).reshape(-1)
    j = idx[:, None] + offsets[None, :]
    ok = (j >= 0) & (j <= last) & (j < len(series.values))
    pool = np.full(j.shape, np.nan)
    pool[ok] = series.values[j[ok]]
    q = nan_quantiles(pool, list(QUANTILES))
    q[np.isfinite(pool).sum(axis=1) < MIN_KNOWN] = np.nan
    return q[:, 0], q[:, 1], q[:, 2]
