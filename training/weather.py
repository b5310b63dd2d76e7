"""The outdoor temperature in training and backtests (shared.weather computes the features, as on the edge).

- `load_temperature`: the observed record (°C per slot) from a file: readings (`time,value` or a Flux export, e.g.
  the agent's `weather_slots` measurement pulled from the house) or the temperature column of a local-slots CSV.
- `TemperatureForecasts`: what a model is given at each issue time of a backtest: the record up to the issue time,
  and after it the record itself (a perfect forecast) or the record plus Gaussian noise per local day (a forecast
  with a realistic error: σ = 1.5 °C for the day's mean, fixed seed).
- `weather_verdict`: the rule that decides whether a training ships its weather bundles (docs/training.md): a
  weather bundle ships only when, on the held-out validation days, with a noisy forecast, it forecasts the day's
  energy at least MIN_DAILY_GAIN better than its twin without the temperature, at most MAX_SLOT_LOSS worse per slot,
  and at least MIN_DAILY_GAIN better than itself given a forecast that says nothing ("the last 7 days' mean again",
  `NoChangeForecast`) — so that the gain is the temperature's, not the bundle's other differences (its factor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import weather as wx
from shared.schema import DAY_NS, SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries, read_csv

RULE_NOISE_C = 1.5  # the forecast error the rule assumes for the day's mean temperature (°C, Gaussian)
RULE_NOISE_SEED = 2026
MIN_DAILY_GAIN = 0.03  # the weather bundle's daily-energy MAE must be at most 0.97 × its twin's
# and its 15-minute MAE at most (1 + this) × its twin's: a weather bundle forecasts days that add up (a cycling load's
# slots cost MAE then), so the days decide; the slots only must not get clearly worse (the seed house with an unrelated
# temperature: days 0.989 ×, slots 0.997 × — not shipped; the heat pump before October 2021: days 0.806 ×, slots 1.013 ×)
MAX_SLOT_LOSS = 0.02


def load_temperature(path: str | Path, timezone: str = "UTC") -> SlotSeries:
    """°C per slot from a readings CSV (annotated Flux / `_time,_value` / `time,value`, UTC) or the temperature
    column of a local-slots CSV (training.data.read_local_slots)."""
    from training.data import LOCAL_TIME, read_local_slots

    with open(path, encoding="utf-8-sig") as f:
        header = next((ln for ln in f if ln.strip() and not ln.startswith("#")), "")
    if LOCAL_TIME in header.split(","):
        temp = read_local_slots(path, timezone).temperature
        if temp is None:
            raise ValueError(f"{path}: no temperature column (daily_avgTmp or temperature_c)")
        return temp
    r = read_csv(path)
    if not len(r.times):
        raise ValueError(f"{path}: no temperature readings")
    start = int(-(-r.times[0] // SLOT_NS) * SLOT_NS)
    n = int((r.times[-1] - start) // SLOT_NS) + 2
    return wx.readings_to_slots(r.times, r.values, start, n)


class TemperatureForecasts:
    """The temperature as known at each issue time: the observed record up to it, the forecast after it — the
    record itself (sigma 0) or the record + N(0, sigma) drawn once per local day (the same day keeps its error
    for every issue time that sees it; seeded)."""

    def __init__(self, observed: SlotSeries, timezone: str = "UTC", sigma_c: float = 0.0, seed: int = 0):
        self.observed, self.sigma_c, self.seed = observed, sigma_c, seed
        if sigma_c > 0:
            days = wx.local_day(observed.end_ns, timezone)
            noise = np.random.default_rng(seed).normal(0.0, sigma_c, int(days.max() - days.min()) + 1)
            self.forecast = SlotSeries(observed.start_ns, observed.values + noise[days - days.min()])
        else:
            self.forecast = observed

    def at(self, issue_ns: int) -> SlotSeries:
        return wx.known_at(self.observed, self.forecast, issue_ns)

    def describe(self) -> str:
        return "observed" if self.sigma_c <= 0 else f"observed + N(0, {self.sigma_c:g} °C) per day, seed {self.seed}"


class NoChangeForecast:
    """A forecast without information: every slot after the issue time at the mean of the last 7 days' record (the
    weather stays as it was)."""

    def __init__(self, observed: SlotSeries):
        self.observed = observed

    def at(self, issue_ns: int) -> SlotSeries:
        known = wx.known_at(self.observed, None, issue_ns)
        week = self.observed.window(issue_ns, 7 * SLOTS_PER_DAY)
        level = float(np.nanmean(week)) if np.isfinite(week).any() else np.nan
        values = known.values.copy()
        values[wx.HISTORY_SLOTS:] = level
        return SlotSeries(known.start_ns, values)

    def describe(self) -> str:
        return "the last 7 days' mean (no change)"


def daily_issues(issues: np.ndarray) -> np.ndarray:
    """The issue times at 00:00 UTC (the backtest's day-ahead issue)."""
    return issues[issues % DAY_NS == 0]


def day_errors(model, series: SlotSeries, issues: np.ndarray, temperature: TemperatureForecasts | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per issue: |sum of forecast − sum of actual| over the day's 96 slots (NaN unless all are known and the
    window is complete) and the 96 slot errors (NaN where unknown)."""
    from shared.window import target

    daily, slots = [], []
    for t in issues.tolist():
        fc = model.predict(series, t, temperature=temperature.at(t) if temperature is not None else None)
        y = target(series, t, model.spec.horizon)
        err = fc.values - y if fc.complete else np.full(len(y), np.nan)
        slots.append(err)
        daily.append(abs(float(np.sum(err))) if np.isfinite(err).all() else np.nan)
    return np.array(daily), np.array(slots)


def weather_verdict(weather_bundle: Path, twin_bundle: Path, series: SlotSeries, temperature: SlotSeries,
                    timezone: str, issues: np.ndarray) -> dict:
    """Whether the weather bundle ships: both bundles through the edge's inference code on the validation days
    (00:00 UTC issues), the weather bundle given a noisy forecast; `ship` and the figures behind it."""
    from shared.inference import LoadedModel

    days = daily_issues(issues)
    fc = TemperatureForecasts(temperature, timezone, RULE_NOISE_C, RULE_NOISE_SEED)
    model = LoadedModel.from_dir(weather_bundle)
    w_day, w_slot = day_errors(model, series, days, fc)
    n_day, n_slot = day_errors(LoadedModel.from_dir(twin_bundle), series, days, None)
    c_day, _ = day_errors(model, series, days, NoChangeForecast(temperature))
    both = np.isfinite(w_day) & np.isfinite(n_day) & np.isfinite(c_day)
    slot_ok = np.isfinite(w_slot) & np.isfinite(n_slot)
    doc = {"days": int(both.sum()), "noise_sigma_c": RULE_NOISE_C, "min_daily_gain": MIN_DAILY_GAIN,
           "max_slot_loss": MAX_SLOT_LOSS, "ship": False}
    if both.sum() < 7 or not slot_ok.any():
        doc["reason"] = f"only {int(both.sum())} validation days with temperature: too few to show a gain"
        return doc
    daily = (float(w_day[both].mean()), float(n_day[both].mean()))
    no_change = float(c_day[both].mean())
    slot = (float(np.abs(w_slot[slot_ok]).mean()), float(np.abs(n_slot[slot_ok]).mean()))
    doc |= {"daily_mae_kwh": round(daily[0], 4), "daily_mae_without_kwh": round(daily[1], 4),
            "slot_mae_kwh": round(slot[0], 5), "slot_mae_without_kwh": round(slot[1], 5),
            "daily_ratio": round(daily[0] / daily[1], 4) if daily[1] > 0 else None,
            "slot_ratio": round(slot[0] / slot[1], 4) if slot[1] > 0 else None,
            "daily_mae_no_change_kwh": round(no_change, 4),
            "daily_ratio_vs_no_change": round(daily[0] / no_change, 4) if no_change > 0 else None}
    doc["ship"] = ship(doc)
    doc["reason"] = ("ships: " if doc["ship"] else "not shipped: ") + (
        f"daily-energy MAE {daily[0]:.2f} kWh, {doc['daily_ratio']:.3f} × the twin without the temperature's and "
        f"{doc['daily_ratio_vs_no_change']:.3f} × its own given a no-change forecast (both need ≤ "
        f"{1 - MIN_DAILY_GAIN:.2f}), 15-minute MAE {doc['slot_ratio']:.3f} × the twin's (needs ≤ "
        f"{1 + MAX_SLOT_LOSS:.2f}), {doc['days']} validation days, forecast error σ {RULE_NOISE_C} °C")
    return doc


def ship(doc: dict) -> bool:
    """The rule on a verdict's figures."""
    ratios = (doc.get("daily_ratio"), doc.get("daily_ratio_vs_no_change"), doc.get("slot_ratio"))
    if any(r is None for r in ratios):
        return False
    return bool(ratios[0] <= 1 - MIN_DAILY_GAIN and ratios[1] <= 1 - MIN_DAILY_GAIN and ratios[2] <= 1 + MAX_SLOT_LOSS)
