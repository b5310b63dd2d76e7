"""Samples (inputs, targets) for a window spec, built with the edge's own shared.window code."""

from __future__ import annotations

import numpy as np

from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries
from shared.window import WindowSpec, build_input, target

Samples = tuple[np.ndarray, np.ndarray, np.ndarray]

# The first issue time leaves a week of history (the 7-day lags) plus some slack for the next-slot steps.
HISTORY_SLOTS = 7 * SLOTS_PER_DAY + 100


def issue_times(series: SlotSeries, start_ns: int, end_ns: int) -> np.ndarray:
    """Slot boundaries in [start, end) with enough history before them."""
    first = max(start_ns, series.start_ns + SLOT_NS * HISTORY_SLOTS)
    first = -(-first // SLOT_NS) * SLOT_NS
    return np.arange(first, end_ns, SLOT_NS, dtype=np.int64)


def build(spec: WindowSpec, series: SlotSeries, issues: np.ndarray, min_known: float = 1.0,
          temperature=None) -> Samples:
    """X [n, steps, F] float32, Y [n, horizon] kWh (NaN where unknown), and the issue times kept. `temperature`
    (a spec with temperature features needs it): the temperature as known at each issue time — an object with
    `at(issue_ns)` (training.weather.TemperatureForecasts), or one slot series for every issue time.

    Samples whose window is incomplete are skipped. Targets are never filled in: unknown target slots stay NaN
    (the loss masks them) and a sample is kept only when at least `min_known` of its target slots are known."""
    xs, ys, kept = [], [], []
    for t in issues.tolist():
        y = target(series, t, spec.horizon)
        if np.isfinite(y).mean() < min_known or not np.isfinite(y).any():
            continue
        temp = temperature.at(t) if hasattr(temperature, "at") else temperature
        x, complete = build_input(spec, series, t, temp)
        if not complete:
            continue
        xs.append(x[0])
        ys.append(y)
        kept.append(t)
    if not xs:
        return (np.zeros((0, spec.steps, spec.n_features), np.float32), np.zeros((0, spec.horizon)),
                np.zeros(0, np.int64))
    return np.stack(xs).astype(np.float32), np.stack(ys), np.array(kept, dtype=np.int64)

