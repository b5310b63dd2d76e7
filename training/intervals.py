"""The bundle's P10/P90 calibration (shared.intervals) from its held-out int8 forecasts on the validation windows.

Held out: for a refitted day-ahead bundle the early-stopped members' int8 export (the refit sees the validation
windows, and residuals on seen windows are too small: the band would under-cover), else the shipped model.
The scores are recorded next to the climatological band's on the same slots (the 10-90 % quantiles of the same
slot over the previous 28 days), which the issue asks the band to beat in width at 80 ± 5 % coverage.
"""

from __future__ import annotations

import numpy as np

from shared import intervals as iv
from shared.schema import SLOT_NS
from shared.series import SlotSeries


def targets(issues: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Target slot end times and steps [n, horizon] of forecasts issued at `issues`."""
    steps = np.arange(1, horizon + 1)
    return issues[:, None] + steps[None, :] * SLOT_NS, np.broadcast_to(steps, (len(issues), horizon))


def calibrate(series: SlotSeries, issues: np.ndarray, pred: np.ndarray, actual: np.ndarray, horizon: int
              ) -> tuple[dict, dict]:
    """(the manifest's `intervals`, the validation record `metrics.validation.interval`)."""
    target_ns, steps = targets(issues, horizon)
    doc = iv.calibrate(pred, actual, target_ns, steps, horizon)
    p10, p90 = iv.band(doc, pred.ravel(), target_ns.ravel(), steps.ravel())
    record = {"calibration": iv.coverage(actual, p10, p90),
              "climatology": climatology_scores(series, issues, actual, horizon)}
    return doc, record


def climatology_scores(series: SlotSeries, issues: np.ndarray, actual: np.ndarray, horizon: int) -> dict:
    """Coverage and width of the climatological band on the same forecasts."""
    lo, hi = np.full(actual.shape, np.nan), np.full(actual.shape, np.nan)
    for i, t in enumerate(issues.tolist()):
        last = series.index_of(t)
        lo[i], hi[i] = iv.climatology(series.values, last, last + np.arange(1, horizon + 1))
    return iv.coverage(actual, lo, hi)
