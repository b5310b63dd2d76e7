"""Live skill of a node's active models: what they forecast in the house (the agent's `forecast` measurement in
its InfluxDB) against what happened (the node's counter), over the last days, next to a naive baseline on the same
slots. Read with the node's read-only InfluxDB credentials; computed by the job worker now and then, not per page.

Next-slot models are scored on their `rolling` forecasts (issued one slot ahead) against persistence (the last
slot again); day-ahead models on their `day_ahead` issue against the same slot one day earlier. `skill` is
1 − MAE / baseline MAE: above 0 the model beats the baseline in this house.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from shared.schema import FORECAST, FORECAST_VALUE_FIELD, SLOT_NS, SLOTS_PER_DAY
from shared.series import Readings, SlotSeries, counter_to_slots

DAYS = 7
MIN_SLOTS = 8  # fewer scored slots than this: no figure (too noisy to show)


def _series(storage, influx: dict, start: datetime, end: datetime, default: tuple[str, str]) -> SlotSeries:
    rows = storage.query_series(influx.get("measurement") or default[0], influx.get("field") or default[1],
                                start, end, influx.get("tags") or None)
    return counter_to_slots(Readings.from_rows(rows))


def score(series: SlotSeries, forecasts: list[tuple[int, float]], horizon: int) -> dict | None:
    """MAE of `forecasts` ((target slot end ns, kWh)) against the series, and of the baseline on the same slots."""
    if not forecasts or len(series.values) == 0:
        return None
    t = np.array([f[0] for f in forecasts], dtype=np.int64)
    f = np.array([f[1] for f in forecasts])
    lag = SLOT_NS if horizon == 1 else SLOTS_PER_DAY * SLOT_NS

    def at(times: np.ndarray) -> np.ndarray:
        idx = (times - series.start_ns) // SLOT_NS
        ok = (idx >= 0) & (idx < len(series.values)) & ((times - series.start_ns) % SLOT_NS == 0)
        out = np.full(len(times), np.nan)
        out[ok] = series.values[idx[ok]]
        return out

    actual, base = at(t), at(t - lag)
    ok = np.isfinite(actual) & np.isfinite(base) & np.isfinite(f)
    if ok.sum() < MIN_SLOTS:
        return None
    mae, base_mae = float(np.mean(np.abs(f[ok] - actual[ok]))), float(np.mean(np.abs(base[ok] - actual[ok])))
    return {"mae": round(mae, 4), "baseline_mae": round(base_mae, 4), "n": int(ok.sum()),
            "baseline": "persistence" if horizon == 1 else "same slot yesterday",
            "skill": round(1 - mae / base_mae, 3) if base_mae > 0 else None}


def live_skill(storage, influx: dict, active: dict[str, str], now: datetime, default: tuple[str, str],
               days: int = DAYS) -> dict[str, dict]:
    """For each active model (name → version): its score over the last `days`, where there is one."""
    start = now - timedelta(days=days + 1)
    series = _series(storage, influx, start, now, default)
    out = {}
    for name, version in sorted(active.items()):
        horizon = int(name.rsplit("-", 1)[1])
        tags = {"name": name, "version": version, "issue": "rolling" if horizon == 1 else "day_ahead"}
        rows = storage.query_series(FORECAST, FORECAST_VALUE_FIELD, now - timedelta(days=days), now, tags)
        if (s := score(series, rows, horizon)) is not None:
            out[name] = s | {"version": version, "days": days}
    return out
