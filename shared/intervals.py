"""P10/P90 around a model's forecast: scaled split-conformal residual quantiles, per time of day and horizon step.

Training (training/intervals.py) runs the bundle's held-out int8 model over its validation windows and stores, per
group, the 10 % and 90 % quantiles of the *scaled residual* r = (actual − p50) / (p50 + offset) in the manifest's
`intervals` entry. The edge (shared/inference.py) turns them back into kWh for each forecast:

    p10 = max(0, p50 + q10[g] · (p50 + offset)),  p90 = p50 + q90[g] · (p50 + offset)

where g is the target slot's group: `tod_groups` equal blocks of the UTC day (by the slot's end), times the
step buckets of `step_edges` (day-ahead: steps 1, 2–4, 5–16, 17–96; next slot: one bucket). Scaling by the
forecast's own level makes the band narrow at night and wide when the house is busy (measured on the seed data:
an unscaled band is 10–15 % wider at the same coverage). P50 is the model's forecast itself.

Recalibration in operation: the table is calibrated on the validation weeks, and a house's errors drift with the
season (eval-rolling: a fixed table covered 0.73 of June and 0.85 of July). So the edge — and the backtest, which
must show what the edge does — multiplies the band's two half-widths by one *band scale* per bundle: the 80 %
quantile, over the last `RECALIBRATION_DAYS` of scored slots, of the scale each slot would have needed to be
covered (`needed_scale`). That is rolling-window split-conformal recalibration: by construction about 80 % of the
last week's slots would have been inside, and the scale follows a drift within days. It is a function of stored
forecasts and actuals only (no state to lose at a restart); with less than a day of scored slots it is 1.

One implementation for training and the edge; a bundle without `intervals` (older bundles) has no band.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shared.schema import SLOT_NS, SLOTS_PER_DAY

METHOD = "scaled_split_conformal"
QUANTILES = (0.1, 0.9)
SCALE_OFFSET_KWH = 0.05  # keeps the scale positive for a forecast of 0 (about a quarter of the night draw)
TOD_GROUPS = 6  # blocks of 4 hours
STEP_EDGES = {1: [], 96: [2, 5, 17]}  # step buckets: [1], [2, 4], [5, 16], [17, 96] for day-ahead
MIN_GROUP = 30  # fewer residuals in a group: it uses the quantiles of all residuals
MAX_SCALED = 100.0  # |quantile| bound checked in manifests (a scaled residual of 100 is 5 kWh at 0 kWh)
RECALIBRATION_DAYS = 7  # the band scale is the coverage quantile of the needed scales of this many days
RECALIBRATION_MIN_SLOTS = SLOTS_PER_DAY  # fewer scored slots: scale 1 (the manifest's table as calibrated)
SCALE_BOUNDS = (0.5, 3.0)  # a scale outside says the scoring is broken, not the band: stay near the table


class IntervalError(ValueError):
    pass


def groups(doc: dict, target_ns: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Group index per target slot (slot end times, UTC) and horizon step (1-based)."""
    tod_groups, edges = doc["tod_groups"], doc["step_edges"]
    slot = (np.asarray(target_ns, dtype=np.int64) - SLOT_NS) // SLOT_NS % SLOTS_PER_DAY  # 0 = 00:00-00:15
    tod = slot * tod_groups // SLOTS_PER_DAY
    bucket = np.digitize(np.asarray(steps), edges) if edges else np.zeros(len(tod), dtype=np.int64)
    return (tod * (len(edges) + 1) + bucket).astype(np.int64)


def calibrate(pred: np.ndarray, actual: np.ndarray, target_ns: np.ndarray, steps: np.ndarray, horizon: int,
              offset: float = SCALE_OFFSET_KWH, tod_groups: int = TOD_GROUPS) -> dict:
    """The manifest's `intervals` entry from held-out forecasts (kWh) and their actual values (NaN: unknown)."""
    pred, actual = np.asarray(pred, float).ravel(), np.asarray(actual, float).ravel()
    target_ns, steps = np.asarray(target_ns).ravel(), np.asarray(steps).ravel()
    ok = np.isfinite(pred) & np.isfinite(actual)
    if ok.sum() < MIN_GROUP:
        raise IntervalError(f"intervals: only {int(ok.sum())} known validation slots (need {MIN_GROUP})")
    doc: dict[str, Any] = {"method": METHOD, "quantiles": list(QUANTILES), "scale_offset_kwh": offset,
                           "tod_groups": tod_groups, "step_edges": list(STEP_EDGES.get(horizon, []))}
    r = (actual[ok] - pred[ok]) / (pred[ok] + offset)
    g = groups(doc, target_ns[ok], steps[ok])
    overall = np.quantile(r, QUANTILES)
    n_groups = tod_groups * (len(doc["step_edges"]) + 1)
    table = []
    for k in range(n_groups):
        rk = r[g == k]
        q = np.quantile(rk, QUANTILES) if len(rk) >= MIN_GROUP else overall
        table.append([round(float(q[0]), 5), round(float(q[1]), 5)])
    doc["table"] = table
    doc["calibration_slots"] = int(ok.sum())
    return doc


def band(doc: dict, p50: np.ndarray, target_ns: np.ndarray, steps: np.ndarray, band_scale: float = 1.0
         ) -> tuple[np.ndarray, np.ndarray]:
    """(p10, p90) in kWh for the forecast p50 of the target slots; p10 ≤ p50 ≤ p90 and p10 ≥ 0. `band_scale`
    (`recalibrated_scale`) multiplies both half-widths."""
    p50 = np.asarray(p50, dtype=np.float64)
    q = np.asarray(doc["table"], dtype=np.float64)[groups(doc, target_ns, steps)]
    scale = (p50 + doc["scale_offset_kwh"]) * band_scale
    p10 = np.clip(p50 + np.minimum(q[:, 0], 0.0) * scale, 0.0, None)
    p90 = p50 + np.maximum(q[:, 1], 0.0) * scale
    return p10, p90


def needed_scale(actual: np.ndarray, p50: np.ndarray, p10: np.ndarray, p90: np.ndarray,
                 band_scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Per slot, the smallest band scale whose band would have held the actual value, from a forecast written
    with `band_scale` (NaN where something is unknown; inf where the band had no width on the actual's side).
    A P10 clipped at 0 kWh understates the lower half-width: such a slot asks for a scale no larger than needed."""
    a, m, lo, hi = (np.asarray(x, dtype=np.float64) for x in (actual, p50, p10, p90))
    s = np.broadcast_to(np.asarray(band_scale, dtype=np.float64), a.shape)
    above = a >= m
    half = np.where(above, hi - m, m - lo) / s  # the unscaled half-width on the actual's side
    dist = np.abs(a - m)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(half > 0, dist / half, np.where(dist > 0, np.inf, 0.0))
    need[~(np.isfinite(a) & np.isfinite(m) & np.isfinite(lo) & np.isfinite(hi) & np.isfinite(s) & (s > 0))] = np.nan
    return need


def recalibrated_scale(needed: np.ndarray, coverage: float = QUANTILES[1] - QUANTILES[0]) -> float:
    """The band scale for the next forecasts: the `coverage` quantile of the recent slots' needed scales (1 with
    fewer than RECALIBRATION_MIN_SLOTS), within SCALE_BOUNDS."""
    n = np.asarray(needed, dtype=np.float64)
    n = n[~np.isnan(n)]
    if len(n) < RECALIBRATION_MIN_SLOTS:
        return 1.0
    q = float(np.quantile(np.minimum(n, 10 * SCALE_BOUNDS[1]), coverage))  # inf (no width): uncovered at any scale
    return round(min(max(q, SCALE_BOUNDS[0]), SCALE_BOUNDS[1]), 4)


def validate(doc: Any, horizon: int) -> dict:
    """Check a manifest's `intervals` entry (the edge multiplies with every number in it)."""
    if not isinstance(doc, dict):
        raise IntervalError("manifest: intervals must be an object")
    if doc.get("method") != METHOD:
        raise IntervalError(f"manifest: intervals.method must be {METHOD!r}, not {doc.get('method')!r}")
    if doc.get("quantiles") != list(QUANTILES):
        raise IntervalError(f"manifest: intervals.quantiles must be {list(QUANTILES)}")
    offset = doc.get("scale_offset_kwh")
    if not _finite(offset) or not 0 < offset <= 1:
        raise IntervalError("manifest: intervals.scale_offset_kwh must be a number in (0, 1]")
    tod = doc.get("tod_groups")
    if not isinstance(tod, int) or isinstance(tod, bool) or not 1 <= tod <= SLOTS_PER_DAY:
        raise IntervalError(f"manifest: intervals.tod_groups must be an integer in [1, {SLOTS_PER_DAY}]")
    edges = doc.get("step_edges")
    if not isinstance(edges, list) or not all(isinstance(e, int) and not isinstance(e, bool) for e in edges) \
            or edges != sorted(set(edges)) or any(not 2 <= e <= horizon for e in edges):
        raise IntervalError(f"manifest: intervals.step_edges must be increasing integers in [2, {horizon}]")
    table = doc.get("table")
    n = tod * (len(edges) + 1)
    if not isinstance(table, list) or len(table) != n:
        raise IntervalError(f"manifest: intervals.table must hold {n} [q10, q90] rows "
                            f"(tod_groups × step buckets)")
    for row in table:
        if not (isinstance(row, list) and len(row) == 2 and all(_finite(x) and abs(x) <= MAX_SCALED for x in row)
                and row[0] <= row[1]):
            raise IntervalError(f"manifest: intervals.table row {row!r} must be [q10, q90], finite, q10 ≤ q90")
    return doc


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def coverage(actual: np.ndarray, p10: np.ndarray, p90: np.ndarray) -> dict[str, float]:
    """Share of the known actual values inside [p10, p90], the mean width, and how many slots."""
    a, lo, hi = (np.asarray(x, dtype=np.float64).ravel() for x in (actual, p10, p90))
    ok = np.isfinite(a) & np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return {"coverage": float("nan"), "width_kwh": float("nan"), "n": 0}
    inside = (a[ok] >= lo[ok]) & (a[ok] <= hi[ok])
    return {"coverage": round(float(inside.mean()), 4), "width_kwh": round(float(np.mean(hi[ok] - lo[ok])), 5),
            "n": int(ok.sum())}


CLIMATOLOGY_DAYS = 28


def climatology(values: np.ndarray, last: int, target_idx: np.ndarray, days: int = CLIMATOLOGY_DAYS
                ) -> tuple[np.ndarray, np.ndarray]:
    """The climatological band the issue compares with: the 10 % and 90 % quantiles of the same slot of the day
    over the previous `days` days, from slots ending at or before index `last` (NaN with fewer than 7 known)."""
    from shared.window import nan_quantiles

    j = np.asarray(target_idx)[:, None] - SLOTS_PER_DAY * np.arange(1, days + 1)[None, :]
    ok = (j >= 0) & (j <= last) & (j < len(values))
    pool = np.full(j.shape, np.nan)
    pool[ok] = values[j[ok]]
    q = nan_quantiles(pool, list(QUANTILES))
    q[np.isfinite(pool).sum(axis=1) < 7] = np.nan
    return q[:, 0], q[:, 1]
