"""Outdoor temperature as a model input: one implementation for training and the edge (issue 26).

A bundle that uses the temperature lists some of TEMPERATURE_FEATURES in `window.features` and declares
`window.weather = {"timezone", "heating_base_c", "cooling_base_c"}` (which local day a slot is on, and the degree-day
bases). The input is a *temperature slot series*: °C per 15-minute slot on the usual UTC grid (labelled by the slot's
end), as known at the issue time T — measured (or as last forecast) for slots ending at or before T, the forecast
for the slots after it. Training composes it from the observed record (`known_at`: observed up to T, and a forecast
after T — the observed values themselves, or observed + noise to score a realistic forecast error); the edge
composes it from its measured temperature and the latest forecast it received (edge_agent/forecast/weather.py).

Features of a step (computed at the step's slot, like the calendar: the target slot of a day-ahead step):
- `temp_day`: mean temperature of the slot's local day (the forecast's day mean for a target day), °C;
- `temp_day_1d`: the same for the day before; `temp_day_7d`: mean of the 7 days before (at least 4 known);
- `hdd_day` / `cdd_day`: heating / cooling degree days of the slot's day, max(0, base − temp_day) and
  max(0, temp_day − base);
- `temp_hour`: the slot's own temperature (an hourly forecast interpolated), °C; `hdh` / `cdh`: heating / cooling
  degree hours of the slot, max(0, base − temp_hour), max(0, temp_hour − base).
A day mean needs at least half of the day's slots known. A window whose temperature features are unknown anywhere
is incomplete (the edge then serves the horizon from a bundle without the input).

Scaling: temperatures enter the model as (°C − 10) / 10, degree days and hours as K / 10 (fixed, so one int8 input
tensor holds them next to the kWh features at a similar range).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from shared.schema import DAY_NS, SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries

TEMPERATURES = ("temp_day", "temp_day_1d", "temp_day_7d", "temp_hour")
DEGREES = ("hdd_day", "cdd_day", "hdh", "cdh")
TEMPERATURE_FEATURES = (*TEMPERATURES, *DEGREES)
# What the weather variants of the day-ahead bundles list (training.plans): the day's forecast mean and where it
# stands against the days the history's kWh came from. Hourly features need an hourly temperature record.
DAY_AHEAD_FEATURES = ("temp_day", "temp_day_1d", "temp_day_7d", "hdd_day")
TEMP_CENTER_C, TEMP_SCALE_C, DEGREE_SCALE = 10.0, 10.0, 10.0
MIN_DAY_SHARE = 0.5  # a day mean needs at least this share of the day's slots
MIN_WEEK_DAYS = 4  # temp_day_7d needs at least this many of the 7 day means


class WeatherError(ValueError):
    pass


def uses_weather(features: list[str] | tuple[str, ...]) -> bool:
    return any(f in TEMPERATURE_FEATURES for f in features)


@dataclass(frozen=True)
class WeatherSpec:
    """The window's `weather` entry: the local day of a slot, and the degree-day bases."""

    timezone: str = "UTC"
    heating_base_c: float = 18.0
    cooling_base_c: float = 22.0

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise WeatherError(f"weather.timezone {self.timezone!r} is not a known IANA timezone") from None
        for key in ("heating_base_c", "cooling_base_c"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not -30 <= v <= 40:
                raise WeatherError(f"weather.{key} must be a number of °C between -30 and 40, not {v!r}")

    @classmethod
    def from_dict(cls, doc: dict) -> WeatherSpec:
        if not isinstance(doc, dict) or set(doc) - {"timezone", "heating_base_c", "cooling_base_c"}:
            raise WeatherError("weather must be an object with timezone, heating_base_c and cooling_base_c")
        return cls(**doc)

    def to_dict(self) -> dict:
        return asdict(self)


# -- local days ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _hour_offsets(timezone: str, year: int) -> np.ndarray:
    """UTC offset (s) of every UTC hour of a year in `timezone` (offsets change on whole UTC hours)."""
    tz = ZoneInfo(timezone)
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp()) // 3600
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp()) // 3600
    out = np.empty(end - start, np.int64)
    for i, h in enumerate(range(start, end)):
        off = datetime.fromtimestamp(h * 3600, UTC).astimezone(tz).utcoffset()
        out[i] = int(off.total_seconds()) if off is not None else 0
    return out


def utc_offsets(t_ns: np.ndarray, timezone: str) -> np.ndarray:
    """The UTC offset in seconds at each time (vectorised, a table per year)."""
    t_ns = np.asarray(t_ns, dtype=np.int64)
    if timezone == "UTC" or not len(t_ns):
        return np.zeros(len(t_ns), np.int64)
    years = t_ns.astype("datetime64[ns]").astype("datetime64[Y]")
    out = np.empty(len(t_ns), np.int64)
    for y in np.unique(years):
        sel = years == y
        year = int(str(y))
        start_h = int(datetime(year, 1, 1, tzinfo=UTC).timestamp()) // 3600
        out[sel] = _hour_offsets(timezone, year)[t_ns[sel] // (3600 * 10**9) - start_h]
    return out


def local_day(end_ns: np.ndarray, timezone: str) -> np.ndarray:
    """Days since 1970-01-01 of the local date of each slot's middle (slots labelled by their end)."""
    mid = np.asarray(end_ns, dtype=np.int64) - SLOT_NS // 2
    return (mid // 10**9 + utc_offsets(mid, timezone)) // 86400


HISTORY_SLOTS = 10 * SLOTS_PER_DAY  # what the features read before an issue time (7 day means before the last day)
FORECAST_SLOTS = 2 * SLOTS_PER_DAY  # and after it (the target slots' days)


# -- temperature per slot -----------------------------------------------------------------------------------------
def readings_to_slots(times_ns: np.ndarray, values: np.ndarray, start_ns: int, n: int,
                      max_gap_s: float = 3 * 3600) -> SlotSeries:
    """°C per slot (slots ending at start_ns + k·15 min, k < n): the readings interpolated linearly at each slot's
    middle, between readings at most `max_gap_s` apart (an hourly forecast or a sensor every few minutes both fit);
    NaN outside the readings or across a longer gap."""
    t = np.asarray(times_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    mid = start_ns + SLOT_NS * np.arange(n, dtype=np.int64) - SLOT_NS // 2
    out = np.full(n, np.nan)
    if len(t) == 0:
        return SlotSeries(start_ns, out)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    hi = np.searchsorted(t, mid, side="left")
    exact = (hi < len(t)) & (t[np.minimum(hi, len(t) - 1)] == mid)
    inner = (hi > 0) & (hi < len(t)) & ~exact
    lo = np.maximum(hi - 1, 0)
    h = np.minimum(hi, len(t) - 1)
    gap = (t[h] - t[lo]) / 1e9
    inner &= gap <= max_gap_s
    frac = (mid - t[lo]) / np.maximum(t[h] - t[lo], 1)
    out[inner] = (v[lo] + frac * (v[h] - v[lo]))[inner]
    out[exact] = v[h][exact]
    return SlotSeries(start_ns, out)


# -- composing what is known at an issue time -----------------------------------------------------------------------
def known_at(past: SlotSeries, forecast: SlotSeries | None, issue_ns: int, history_slots: int = HISTORY_SLOTS,
             horizon_slots: int = FORECAST_SLOTS) -> SlotSeries:
    """The temperature as known at issue_ns: `past` for the `history_slots` slots ending at or before it, `forecast`
    for the `horizon_slots` after it (NaN where either is unknown). Both are slot series of °C."""
    start = issue_ns - (history_slots - 1) * SLOT_NS
    out = np.full(history_slots + horizon_slots, np.nan)
    out[:history_slots] = past.window(issue_ns, history_slots)
    if forecast is not None:
        out[history_slots:] = forecast.window(issue_ns + horizon_slots * SLOT_NS, horizon_slots)
    return SlotSeries(start, out)


# -- features -----------------------------------------------------------------------------------------------------
def _slot_values(temp: SlotSeries, end_ns: np.ndarray) -> np.ndarray:
    idx = (np.asarray(end_ns, dtype=np.int64) - temp.start_ns) // SLOT_NS
    out = np.full(len(idx), np.nan)
    ok = (idx >= 0) & (idx < len(temp.values))
    out[ok] = temp.values[idx[ok]]
    return out


def day_means(temp: SlotSeries, first_day: int, last_day: int, timezone: str) -> np.ndarray:
    """Mean temperature of each local day in [first_day, last_day] (NaN with fewer than half its slots known)."""
    lo = (first_day - 1) * DAY_NS
    hi = (last_day + 2) * DAY_NS
    ends = np.arange(lo // SLOT_NS * SLOT_NS, hi, SLOT_NS, dtype=np.int64)
    days = local_day(ends, timezone)
    vals = _slot_values(temp, ends)
    inside = (days >= first_day) & (days <= last_day)
    d, v = days[inside] - first_day, vals[inside]
    n_days = last_day - first_day + 1
    slots = np.bincount(d, minlength=n_days)
    ok = np.isfinite(v)
    known = np.bincount(d[ok], minlength=n_days)
    total = np.bincount(d[ok], weights=v[ok], minlength=n_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / known
    return np.where(known >= MIN_DAY_SHARE * np.maximum(slots, 1), means, np.nan)


def features(spec: WeatherSpec, names: list[str], temp: SlotSeries | None, end_ns: np.ndarray) -> dict[str, np.ndarray]:
    """The listed temperature features (raw °C / K) at slots ending at end_ns, from the temperature as known at the
    issue time (NaN everywhere without one)."""
    wanted = [n for n in names if n in TEMPERATURE_FEATURES]
    end_ns = np.asarray(end_ns, dtype=np.int64)
    if not wanted:
        return {}
    if temp is None or not len(temp.values):
        return {n: np.full(len(end_ns), np.nan) for n in wanted}
    days = local_day(end_ns, spec.timezone)
    first, last = int(days.min()) - 7, int(days.max())
    means = day_means(temp, first, last, spec.timezone)
    rel = days - first
    cols: dict[str, np.ndarray] = {}
    day = means[rel]
    cols["temp_day"] = day
    cols["temp_day_1d"] = means[rel - 1]
    week = np.stack([means[rel - k] for k in range(1, 8)], axis=1)
    count = np.isfinite(week).sum(axis=1)
    with np.errstate(invalid="ignore"):
        cols["temp_day_7d"] = np.where(count >= MIN_WEEK_DAYS, np.nansum(week, axis=1) / np.maximum(count, 1), np.nan)
    hour = _slot_values(temp, end_ns)
    cols["temp_hour"] = hour
    with np.errstate(invalid="ignore"):
        cols["hdd_day"] = np.maximum(spec.heating_base_c - day, 0.0)
        cols["cdd_day"] = np.maximum(day - spec.cooling_base_c, 0.0)
        cols["hdh"] = np.maximum(spec.heating_base_c - hour, 0.0)
        cols["cdh"] = np.maximum(hour - spec.cooling_base_c, 0.0)
    return {n: cols[n] for n in wanted}


def scale(name: str, raw: np.ndarray) -> np.ndarray:
    """A temperature feature as the model sees it (missing values as the centre: the window is incomplete then)."""
    x = (raw - TEMP_CENTER_C) / TEMP_SCALE_C if name in TEMPERATURES else raw / DEGREE_SCALE
    return np.where(np.isfinite(x), x, 0.0)
