"""The edge's guard, replayed on a backtest: what the house would have been served.

The edge judges each bundle every cycle on its live skill over the last 7 days (edge_agent/forecast/guard.py): a
model that lost to the best naive baseline on the slots both were scored on (with at least 300 next-slot or 480
day-ahead slots) is kept in the shadow and the baseline it lost to is served, until the model's skill is back at
+2 % or a new version arrives. This replays exactly that — the edge's own Guard and skill Ledger — over a backtest's
forecasts CSV: issue by issue, the guard is judged on the slots scored so far (targets known at the issue time), then
the served forecast is the model's or the baseline's, and the issue's slots are scored once known. Like a bundle
pushed at the start of the month, the version starts with no scored slots (it serves while learning).

`served(csv, series)` returns the served forecast's MAE relative to the best baseline's on the same slots (day-ahead:
the best of yesterday / last week / 7-day median, as the independent scorer picks it; next slot: the best of all
four), the model's own ratio on the same slots, and how many issues were served by a baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.forecast.guard import Guard, GuardConfig
from edge_agent.forecast.scoring import FAMILY, Ledger, baseline_key
from shared.schema import SLOT_NS
from shared.series import SlotSeries
from training.backtest import actual_values, baseline_forecasts, read_forecast_rows

KEY = ("model", "bundle", "v1")


def served(forecasts_csv: Path, series: SlotSeries, guard: GuardConfig | None = None) -> dict:
    issued, target, steps, values = read_forecast_rows(forecasts_csv)[:4]
    horizon = int(steps.max()) if len(steps) else 1
    fam = FAMILY[horizon]
    actual = actual_values(series, target)
    base = baseline_forecasts(series, issued, steps, horizon)
    ledger, g = Ledger(), Guard(guard or GuardConfig())
    out_values = values.copy()
    shadow_issues = 0
    issues = np.unique(issued)
    for t in issues.tolist():
        g.update(t, {"bundle": (horizon, KEY[0], KEY[2])},
                 lambda h, key, since: ledger.stats(key, since, fam.baselines))
        rows = np.nonzero(issued == t)[0]
        if g.shadowed("bundle", KEY[2]) is not None:
            shadow_issues += 1
            name = g.baseline(horizon)
            fallback = base[name][rows]
            out_values[rows] = np.where(np.isfinite(fallback), fallback, values[rows])
        known = rows[np.isfinite(actual[rows])]
        if len(known):
            errors = {KEY: values[known] - actual[known]}
            errors |= {baseline_key(b): base[b][known] - actual[known] for b in fam.baselines}
            ledger.append(target[known], issued[known], actual[known], errors)
    # scored like the independent scorer: the slots every baseline of the family knows
    ok = np.isfinite(actual) & np.all(np.isfinite(np.stack([base[b] for b in fam.baselines])), axis=0)
    maes = {b: float(np.abs(base[b][ok] - actual[ok]).mean()) for b in fam.baselines}
    best = min(maes, key=maes.get)
    return {"slots": int(ok.sum()), "issues": int(len(issues)), "served_by_baseline": shadow_issues,
            "best_baseline": best,
            "served_mae_ratio": round(float(np.abs(out_values[ok] - actual[ok]).mean()) / maes[best], 4),
            "model_mae_ratio": round(float(np.abs(values[ok] - actual[ok]).mean()) / maes[best], 4)}


def residual_zeros(forecasts_csv: Path, series: SlotSeries, float_csv: Path | None = None,
                   manifest: dict | None = None) -> dict:
    """How often a next-slot forecast equals the last slot (its int8 residual exactly zero), and — with the float
    twin's backtest — how often the float model's residual is within half an output step of zero (what rounding
    to the int8 output must give), both models' MAE, and the residuals outside the int8 output's range."""
    issued, _, _, values = read_forecast_rows(forecasts_csv)[:4]
    last = actual_values(series, issued)
    nxt = actual_values(series, issued + SLOT_NS)
    ok = np.isfinite(last)
    out: dict = {"issues": int(ok.sum()), "zero_residual": int(np.sum(np.abs(values[ok] - last[ok]) < 1e-6))}
    out["zero_share"] = round(out["zero_residual"] / max(out["issues"], 1), 4)
    scored = ok & np.isfinite(nxt)
    out["int8_mae"] = round(float(np.abs(values[scored] - nxt[scored]).mean()), 5)
    if float_csv is not None and Path(float_csv).exists() and manifest is not None:
        f_issued, _, _, f_values = read_forecast_rows(float_csv)[:4]
        f_by_issue = dict(zip(f_issued.tolist(), f_values.tolist(), strict=True))
        f = np.array([f_by_issue.get(t, np.nan) for t in issued.tolist()])
        step = manifest["output"]["scale"] * manifest["window"]["std"]  # kWh per int8 output step
        lo = (-128 - manifest["output"]["zero_point"]) * step
        hi = (127 - manifest["output"]["zero_point"]) * step
        both = ok & np.isfinite(f)
        r = f[both] - last[both]
        out |= {"output_step_kwh": round(step, 6), "float_within_half_step": int(np.sum(np.abs(r) < step / 2)),
                "float_outside_int8_range": int(np.sum((r < lo) | (r > hi))),
                "float_mae": round(float(np.abs(f[scored & np.isfinite(f)] - nxt[scored & np.isfinite(f)]).mean()), 5)}
    return out
