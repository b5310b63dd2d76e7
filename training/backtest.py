"""Walk-forward backtest through the edge's own inference code, and evaluation against the baselines."""

from __future__ import annotations

import csv
import json
from collections import deque
from pathlib import Path

import numpy as np

from shared import intervals as iv
from shared.baselines import BASELINES
from shared.schema import DAY_NS, SLOT_NS
from shared.series import SlotSeries, iso, parse_time_ns
from training.scoring import metrics

COLUMNS = ["issued_at", "target_time", "horizon_steps", "value_kwh"]
BAND_COLUMNS = ["p10_kwh", "p90_kwh"]  # empty for a bundle without intervals; optional when reading


def issue_times_for(horizon: int, start_ns: int, end_ns: int) -> np.ndarray:
    """Next-slot bundles issue at every slot boundary, day-ahead bundles at 00:00 UTC, within [start, end)."""
    step = SLOT_NS if horizon == 1 else DAY_NS
    first = -(-start_ns // step) * step
    return np.arange(first, end_ns, step, dtype=np.int64)


def with_float_model(model, float_model: Path):
    """The bundle's model (window, scaling, runtime) running the float TFLite file `float_model` (written by
    `train` to DIR/float/) instead of its int8 model, to compare the two on the same issue times."""
    from shared import manifest as mf
    from shared.inference import LoadedModel, tensor_entry

    model_bytes = Path(float_model).read_bytes()
    probe = model.runtime.load(model_bytes)
    doc = dict(model.manifest)
    doc["input"] = tensor_entry(probe.get_input_details()[0])
    doc["output"] = tensor_entry(probe.get_output_details()[0])
    doc["model"] = {**doc["model"], "sha256": mf.sha256_bytes(model_bytes), "bytes": len(model_bytes)}
    return LoadedModel(doc, model_bytes, model.runtime)


class RecentNeeds:
    """For a walk-forward backtest, what the edge's live scoring gives its band recalibration: the needed band
    scales (shared.intervals.needed_scale) of the forecasts whose targets are known at an issue time, over the
    last RECALIBRATION_DAYS — so that the backtest's band is the one the edge would have served."""

    def __init__(self, series: SlotSeries):
        self.series = series
        self.pending: deque[tuple[int, float, float, float, float]] = deque()  # target, p50, p10, p90, scale
        self.known: deque[tuple[int, float]] = deque()  # target, needed scale
        self.scales: list[float] = []

    def add(self, issue_ns: int, values: np.ndarray, p10: np.ndarray, p90: np.ndarray, scale: float) -> None:
        for k, row in enumerate(zip(values.tolist(), p10.tolist(), p90.tolist(), strict=True), start=1):
            self.pending.append((issue_ns + k * SLOT_NS, *row, scale))

    def scale(self, issue_ns: int) -> float:
        due = []
        while self.pending and self.pending[0][0] <= issue_ns:
            due.append(self.pending.popleft())
        if due:
            target, p50, p10, p90, scale = (np.array(c) for c in zip(*due, strict=True))
            need = iv.needed_scale(actual_values(self.series, target), p50, p10, p90, scale)
            self.known.extend(zip(target.tolist(), need.tolist(), strict=True))
        while self.known and self.known[0][0] <= issue_ns - iv.RECALIBRATION_DAYS * DAY_NS:
            self.known.popleft()
        s = iv.recalibrated_scale(np.array([n for _, n in self.known]))
        self.scales.append(s)
        return s

    def summary(self) -> dict:
        s = np.array(self.scales or [1.0])
        return {"days": iv.RECALIBRATION_DAYS, "scale_min": float(s.min()), "scale_mean": round(float(s.mean()), 4),
                "scale_max": float(s.max())}


def write_forecasts(model, series: SlotSeries, start_ns: int, end_ns: int, out: Path,
                    recent: RecentNeeds | None = None, temperature=None) -> tuple[int, int]:
    """Forecast at every issue time in [start, end) from the slots ending at or before it; returns how many
    issue times were written and how many were skipped (incomplete window). With `recent`, the band is
    recalibrated at each issue time as on the edge; `temperature` (training.weather.TemperatureForecasts) gives a
    bundle that takes it the temperature as known at each issue time."""
    written = skipped = 0
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + BAND_COLUMNS)
        for t in issue_times_for(model.spec.horizon, start_ns, end_ns).tolist():
            scale = recent.scale(t) if recent is not None else 1.0
            temp = temperature.at(t) if temperature is not None and model.needs_temperature else None
            fc = model.predict(series, t, band_scale=scale, temperature=temp)
            if not fc.complete:
                skipped += 1
                continue
            if recent is not None and fc.p10 is not None:
                recent.add(t, fc.values, fc.p10, fc.p90, scale)
            band = zip(fc.p10, fc.p90, strict=True) if fc.p10 is not None else [(None, None)] * len(fc.values)
            for k, (v, (lo, hi)) in enumerate(zip(fc.values, band, strict=True), start=1):
                w.writerow([iso(t), iso(t + k * SLOT_NS), k, f"{v:.6f}",
                            "" if lo is None else f"{lo:.6f}", "" if hi is None else f"{hi:.6f}"])
            written += 1
    return written, skipped


def backtest(bundle_dir: Path, series: SlotSeries, start_ns: int, end_ns: int, out: Path,
             float_model: Path | None = None, recalibrate: bool = True, temperature=None) -> dict:
    """Write the forecasts CSV through the edge's inference code; a summary of the run.

    `float_model`: run this float TFLite file with the bundle's window instead of the bundle's int8 model.
    `recalibrate`: the band as the edge serves it, recalibrated on the backtest's own last week (starting from
    the manifest's table: the backtest knows no scored slots before `start`); False: the table as calibrated.
    `temperature`: the forecasts a bundle with temperature inputs is given (training.weather.TemperatureForecasts)."""
    from shared.inference import LoadedModel

    model = LoadedModel.from_dir(bundle_dir)
    if float_model is not None:
        model = with_float_model(model, float_model)
    recent = RecentNeeds(series) if recalibrate and model.manifest.get("intervals") else None
    written, skipped = write_forecasts(model, series, start_ns, end_ns, out, recent, temperature)
    summary = {"bundle": model.name, "version": model.manifest["version"],
               "model": "float" if float_model else "int8", "issues": written, "skipped_incomplete": skipped,
               "runtime": str(model.runtime)}
    if model.needs_temperature:
        summary["temperature"] = temperature.describe() if temperature is not None else "none (every window incomplete)"
    if recent is not None:
        summary["band_recalibration"] = recent.summary()
    return summary


def read_forecast_rows(path: Path) -> tuple[np.ndarray, ...]:
    """issued, target, steps, values, p10, p90 (NaN where the file has no band)."""
    issued, target, steps, values, p10, p90 = [], [], [], [], [], []
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        missing = set(COLUMNS) - set(r.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for row in r:
            issued.append(parse_time_ns(row["issued_at"]))
            target.append(parse_time_ns(row["target_time"]))
            steps.append(int(row["horizon_steps"]))
            values.append(float(row["value_kwh"]))
            p10.append(float(row.get("p10_kwh") or "nan"))
            p90.append(float(row.get("p90_kwh") or "nan"))
    return (np.array(issued), np.array(target), np.array(steps), np.array(values), np.array(p10),
            np.array(p90))


def actual_values(series: SlotSeries, target_ns: np.ndarray) -> np.ndarray:
    """The series' kWh at the target slots (NaN where unknown or outside the series)."""
    idx = np.array([series.index_of(int(t)) for t in target_ns])
    inside = (idx >= 0) & (idx < len(series.values))
    actual = np.full(len(target_ns), np.nan)
    actual[inside] = series.values[idx[inside]]
    return actual


def baseline_forecasts(series: SlotSeries, issued: np.ndarray, steps: np.ndarray, horizon: int
                       ) -> dict[str, np.ndarray]:
    """Every baseline's forecast for each forecast row (issued at `issued`, `steps` slots ahead)."""
    base = {name: np.full(len(issued), np.nan) for name in BASELINES}
    cache: dict[tuple[str, int], np.ndarray] = {}  # one baseline run per issue time, not per row
    for i, (t, k) in enumerate(zip(issued.tolist(), steps.tolist(), strict=True)):
        for name, fn in BASELINES.items():
            key = (name, t)
            if key not in cache:
                cache[key] = fn(series, t, horizon)
            base[name][i] = cache[key][k - 1]
    return base


def _errors(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (training.scoring.metrics, the one definition), rounded for the report."""
    m = metrics(pred, actual)
    return {"rmse": round(m["rmse"], 5), "mae": round(m["mae"], 5)}


def evaluate(forecasts: Path, series: SlotSeries) -> dict:
    """RMSE and MAE of the model and of every baseline on the same slots (where the actual value and every
    baseline are known), the best baseline (by RMSE for next-slot, MAE for day-ahead) and the model's ratio."""
    issued, target, steps, values, p10, p90 = read_forecast_rows(forecasts)
    actual = actual_values(series, target)
    horizon = int(steps.max()) if len(steps) else 1
    base = baseline_forecasts(series, issued, steps, horizon)
    ok = np.isfinite(actual) & np.all(np.isfinite(np.stack(list(base.values()))), axis=0)
    result = {"slots": int(ok.sum()), "forecasts": int(len(target)), "model": _errors(values[ok], actual[ok]),
              "baselines": {name: _errors(p[ok], actual[ok]) for name, p in base.items()}}
    key = "rmse" if horizon == 1 else "mae"
    best = min(result["baselines"], key=lambda n: result["baselines"][n][key])
    result["best_baseline"] = best
    result[f"ratio_{key}_vs_{best}"] = round(result["model"][key] / result["baselines"][best][key], 4)
    if np.isfinite(p10).any():
        result["interval"] = interval_scores(series, issued, target, actual, p10, p90, ok)
    if horizon == 1:
        result["ratio_rmse_vs_persistence"] = round(result["model"]["rmse"] /
                                                    result["baselines"]["persistence"]["rmse"], 4)
    return result


def interval_scores(series: SlotSeries, issued: np.ndarray, target: np.ndarray, actual: np.ndarray,
                    p10: np.ndarray, p90: np.ndarray, ok: np.ndarray) -> dict:
    """P10-P90 coverage and width on the scored slots, next to the climatological band's (shared.intervals) on
    the slots where both exist."""
    clim_lo, clim_hi = np.full(len(target), np.nan), np.full(len(target), np.nan)
    for i, (t, tt) in enumerate(zip(issued.tolist(), target.tolist(), strict=True)):
        last = series.index_of(t)
        lo, hi = iv.climatology(series.values, last, np.array([series.index_of(tt)]))
        clim_lo[i], clim_hi[i] = lo[0], hi[0]
    both = ok & np.isfinite(clim_lo) & np.isfinite(p10)
    return {"model": iv.coverage(actual[both], p10[both], p90[both]),
            "climatology": iv.coverage(actual[both], clim_lo[both], clim_hi[both])}


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2)
