"""Whether a house's training is given its outdoor temperature record (`python -m training train --temperature`).

A pull also fetches the agent's `weather_slots` (server.pull.pull_temperature). A training job passes that file when
it covers at least MIN_COVERAGE of the training period's days, else it trains as without one and says so. The
server only supplies the input: whether a weather bundle ships stays the training's rule (training.weather).

Why 80 %: a weather bundle learns only from windows whose temperature is known (the day means need half a day's
slots, temp_day_7d four of the seven days before), and the rule judges it against its twin, trained on every day,
on the last days of the period. With much less of the period recorded — typically a house whose agent got its
[weather] section a few weeks ago — the weather bundle learns from a fraction of the days its twin sees, and the
comparison says more about that than about the temperature; a retrain a few weeks later gets the record anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import weather as wx
from shared.series import SlotSeries

MIN_COVERAGE = 0.8  # share of the training days with a recorded temperature needed to train with it


@dataclass
class TemperatureInput:
    """The temperature a training gets: `file` (None: trained without) and what the job's log and result say."""

    file: str | None
    timezone: str
    note: str
    days: int = 0
    of_days: int = 0

    def doc(self) -> dict:
        return {"used": self.file is not None, "file": Path(self.file).name if self.file else None,
                "timezone": self.timezone, "days": self.days, "of_days": self.of_days, "note": self.note}


def house_timezone(params: dict, status: dict | None) -> str:
    """The house's IANA timezone (its local days): the job's `timezone`, else what the agent reports (its
    [weather] timezone, else its [forecast] one: the status API's `calendar`), else UTC."""
    cal = (status or {}).get("calendar") or {}
    return params.get("timezone") or cal.get("weather_timezone") or cal.get("timezone") or "UTC"


def _days(series: SlotSeries, timezone: str) -> set[int]:
    """The local days (shared.weather.local_day) with at least half of their slots known: the rule by which the
    training's day means count a day (shared.weather.day_means; a DST day has 92 or 100 slots)."""
    ok = np.isfinite(series.values)
    if not ok.any():
        return set()
    days = wx.local_day(series.end_ns[ok], timezone)
    first = int(days.min())
    means = wx.day_means(series, first, int(days.max()), timezone)
    return {first + int(i) for i in np.flatnonzero(np.isfinite(means))}


def coverage(energy: SlotSeries, temperature: SlotSeries, timezone: str) -> tuple[int, int]:
    """(days of the energy series that also have the temperature, days of the energy series)."""
    days = _days(energy, timezone)
    return len(days & _days(temperature, timezone)), len(days)


def choose(pulled: dict | None, energy: SlotSeries, params: dict, status: dict | None) -> TemperatureInput:
    """What a node's training gets: the pulled temperature record (`pulled["temperature"]`, server.pull) when it
    covers MIN_COVERAGE of the training days (`energy`, already cut at the job's `until`), else nothing and why."""
    from training.weather import load_temperature

    tz = house_timezone(params, status)
    temp = (pulled or {}).get("temperature") or {}
    if temp.get("error"):
        return TemperatureInput(None, tz, f"without outdoor temperature: {temp['error']}")
    if not temp.get("file"):
        return TemperatureInput(None, tz, "without outdoor temperature: the house recorded none (no weather_slots)")
    try:
        record = load_temperature(temp["file"], tz)
    except (ValueError, OSError):
        return TemperatureInput(None, tz, f"without outdoor temperature: {Path(temp['file']).name} is not readable")
    have, of = coverage(energy, record, tz)
    if of == 0 or have < MIN_COVERAGE * of:
        return TemperatureInput(None, tz, f"without outdoor temperature: only {have} of {of} days recorded "
                                          f"(needs {MIN_COVERAGE:.0%})", have, of)
    return TemperatureInput(temp["file"], tz, f"with outdoor temperature: {have} of {of} days recorded "
                                              f"({Path(temp['file']).name}, days in {tz})", have, of)


def as_forecasts(path: str | Path | None, timezone: str):
    """A pulled temperature file as training.weather.TemperatureForecasts, or None when there is no readable one.
    The forecast is the record + the shipping rule's error (N(0, 1.5 °C) per local day, seeded): the edge serves
    weather bundles a real forecast, and given the record itself the gate would favour a weather bundle over a
    bundle without the temperature by what no house gets."""
    from training.weather import RULE_NOISE_C, RULE_NOISE_SEED, TemperatureForecasts, load_temperature

    if not path or not Path(path).exists():
        return None
    try:
        return TemperatureForecasts(load_temperature(str(path), timezone), timezone, RULE_NOISE_C, RULE_NOISE_SEED)
    except (ValueError, OSError):
        return None
