"""Live skill of a node's active models, read from the node's InfluxDB with its read-only credentials.

First choice: what the agent itself scored (edge_agent/forecast/skill.py): the `forecast_skill` rows with
`window = 7d`, per bundle name and version, written every cycle — skill (1 − MAE / MAE of the best baseline on the
same slots), MAE, the baseline's MAE, and for bundles with a P10/P90 band its coverage. The agent scores with the
whole set of baselines and the slots it really served, so the server does not second-guess it.

Fallback, for agents that do not write `forecast_skill` (older releases): the server computes a figure itself from
the agent's `forecast` measurement against what the meter counted, next to persistence for next-slot models and the
same slot yesterday for day-ahead ones (`source: server`). Both are read by the job worker now and then (not per
page); the per-house page reads the 7-day skill history on demand (`history`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from shared.schema import FORECAST, FORECAST_SKILL, FORECAST_VALUE_FIELD, SLOT_NS, SLOTS_PER_DAY
from shared.series import Readings, SlotSeries, counter_to_slots, iso

DAYS = 7
WINDOW = "7d"  # the agent's rolling figures the server reads (matches DAYS)
HISTORY_DAYS = 14  # the per-house page's skill chart
HISTORY_STEP_NS = 3600 * 10**9  # one point per hour on the chart (the agent writes one per 15-minute cycle)
MIN_SLOTS = 8  # fewer scored slots than this: no figure (too noisy to show)
EDGE_FIELDS = {"skill": "skill", "mae_kwh": "mae", "baseline_mae_kwh": "baseline_mae", "skill_slots": "n",
               "p10_p90_coverage": "coverage", "coverage_slots": "coverage_n"}


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


def edge_figures(storage, name: str, version: str, now: datetime) -> dict | None:
    """The newest 7-day figures the agent wrote for this version within the last day, or None."""
    tags = {"name": name, "version": version, "window": WINDOW}
    got, at = {}, None
    for field, key in EDGE_FIELDS.items():
        rows = storage.query_series(FORECAST_SKILL, field, now - timedelta(days=1), now + timedelta(seconds=1), tags)
        if rows:
            t, value = rows[-1]
            got[key] = int(value) if key in ("n", "coverage_n") else round(value, 4)
            at = t if field == "mae_kwh" else at
    if "mae" not in got:
        return None
    return got | {"source": "edge", "baseline": "best baseline", "at": iso(at), "days": DAYS}


def live_skill(storage, influx: dict, active: dict[str, str], now: datetime, default: tuple[str, str],
               days: int = DAYS) -> dict[str, dict]:
    """For each active model (name → version): the agent's own 7-day figures, else the server's computation."""
    out: dict[str, dict] = {}
    missing = {}
    for name, version in sorted(active.items()):
        if (fig := edge_figures(storage, name, version, now)) is not None:
            out[name] = fig | {"version": version}
        else:
            missing[name] = version
    if not missing:
        return out
    series = _series(storage, influx, now - timedelta(days=days + 1), now, default)
    for name, version in missing.items():
        horizon = int(name.rsplit("-", 1)[1])
        tags = {"name": name, "version": version, "issue": "rolling" if horizon == 1 else "day_ahead"}
        rows = storage.query_series(FORECAST, FORECAST_VALUE_FIELD, now - timedelta(days=days), now, tags)
        if (s := score(series, rows, horizon)) is not None:
            out[name] = s | {"version": version, "days": days, "source": "server"}
    return out


def _hourly(rows: list[tuple[int, float]]) -> dict[int, float]:
    """The last value of each hour (bucket start ns → value)."""
    out: dict[int, float] = {}
    for t, v in rows:
        out[t // HISTORY_STEP_NS * HISTORY_STEP_NS] = v
    return out


def history(storage, versions: dict[str, list[str]], now: datetime, days: int = HISTORY_DAYS) -> list[dict]:
    """The agent's 7-day skill and P10–P90 coverage over the last `days`, hourly, per name and version:
    [{"name", "version", "t": [iso hour], "skill": [fraction | None], "coverage": [fraction | None]}]."""
    out = []
    start, end = now - timedelta(days=days), now + timedelta(seconds=1)
    for name in sorted(versions):
        for version in versions[name]:
            tags = {"name": name, "version": version, "window": WINDOW}
            skill = _hourly(storage.query_series(FORECAST_SKILL, "skill", start, end, tags))
            coverage = _hourly(storage.query_series(FORECAST_SKILL, "p10_p90_coverage", start, end, tags))
            hours = sorted(set(skill) | set(coverage))
            if hours:
                out.append({"name": name, "version": version, "t": [iso(h) for h in hours],
                            "skill": [skill.get(h) for h in hours], "coverage": [coverage.get(h) for h in hours]})
    return out
