"""The homeowner's view of a house, read from its own InfluxDB (the node's read-only credentials, as pulls do):
today's energy so far and the last 7 days (house, grid import/export, PV, battery, autarky where PV or a battery
exists) from the agent's `energy_flow`, and the forecast for the next 24 h with its P10–P90 band next to what was
said a day ahead and what happened.

Days are the house's local days (its agent reports its `[forecast] timezone` in the status: `calendar`). A slot is
labelled by its end (docs/architecture.md), so the slot ending at local midnight belongs to the day before. Read
when the page asks (`/nodes/<id>/home.json`), never by the job worker: a page costs about a dozen small queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from shared import schema
from shared.schema import SLOT_NS, SLOT_SECONDS
from shared.series import Readings, counter_to_slots

DAYS = 7
ENERGY_FIELDS = ("house", "grid_import", "grid_export", "pv", "battery_charge", "battery_discharge", "self_supplied")
DAY_AHEAD_NAMES = ("cnn-96", "lstm-96", "baseline-96")  # which day-ahead series to show when the status says none


@dataclass
class Day:
    """One local day's energy in kWh (sums of the slots known) and how many of its slots are known."""

    day: date
    slots: int = 0
    expected: int = 96  # 92 or 100 on the days the clocks change
    kwh: dict[str, float] = field(default_factory=dict)

    def autarky(self) -> float | None:
        house = self.kwh.get("house") or 0.0
        return None if house <= 0 or "self_supplied" not in self.kwh else self.kwh["self_supplied"] / house

    def to_dict(self) -> dict:
        """The day for the page and the API; `autarky_pct` is the whole percent shown, rounded once from the
        exact share (from `autarky`, already rounded to 3 decimals, 45.496 % showed as 46 %)."""
        a = self.autarky()
        return {"date": self.day.isoformat(), "slots": self.slots, "expected": self.expected,
                **{k: round(v, 3) for k, v in self.kwh.items()}, "autarky": _round(a, 3),
                "autarky_pct": None if a is None else int(f"{100 * a:.0f}")}


def _round(v: float | None, n: int) -> float | None:
    return None if v is None else round(v, n)


def local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def day_of_slot(end_ns: int, tz: ZoneInfo) -> date:
    """The local day a slot belongs to: the one its last second lies in (slots are labelled by their end)."""
    return datetime.fromtimestamp((end_ns - 10**9) / 1e9, UTC).astimezone(tz).date()


def energy(storage, tz: ZoneInfo, now: datetime, days: int = DAYS) -> dict:
    """Today so far and the `days` local days before it, from `energy_flow`:
    {"today": Day dict, "days": [Day dict, oldest first], "has_pv", "has_battery", "has_export", "newest_slot"}."""
    today = now.astimezone(tz).date()
    dates = [today - timedelta(days=k) for k in range(days, -1, -1)]
    table = {d: Day(d, expected=round((local_midnight(d + timedelta(days=1), tz) - local_midnight(d, tz))
                                      .total_seconds() / SLOT_SECONDS)) for d in dates}
    start = local_midnight(dates[0], tz) + timedelta(seconds=1)  # the first slot of the first day ends after it
    end = now + timedelta(seconds=1)
    newest = None
    for f in ENERGY_FIELDS:
        for t, v in storage.query_series(schema.ENERGY_FLOW, f, start.astimezone(UTC), end):
            d = table.get(day_of_slot(t, tz))
            if d is None or not np.isfinite(v):
                continue
            d.kwh[f] = d.kwh.get(f, 0.0) + v
            if f == schema.HOUSE_FIELD:
                d.slots += 1
                newest = t if newest is None else max(newest, t)
    total = lambda f: sum(d.kwh.get(f, 0.0) for d in table.values())  # noqa: E731
    has_pv, has_battery = total("pv") > 0, total("battery_charge") + total("battery_discharge") > 0
    out = {"today": table[today].to_dict(), "days": [table[d].to_dict() for d in dates[:-1]],
           "has_pv": has_pv, "has_battery": has_battery, "has_export": total("grid_export") > 0,
           "newest_slot": newest}
    if not (has_pv or has_battery):  # a grid-only house: all it uses comes from the grid, autarky says nothing
        for d in [out["today"], *out["days"]]:
            d["autarky"] = d["autarky_pct"] = None
    return out


@dataclass
class Band:
    """A forecast series: slot ends (ns), P50 and the band (NaN where unknown)."""

    name: str
    t: np.ndarray
    value: np.ndarray
    p10: np.ndarray
    p90: np.ndarray

    @property
    def has_band(self) -> bool:
        return bool(np.isfinite(self.p10).any())


def _forecast(storage, name: str, issue: str, start: datetime, end: datetime) -> Band | None:
    tags = {"name": name, "issue": issue, "horizon": "96"}
    rows = {f: dict(storage.query_series(schema.FORECAST, f, start, end, tags))
            for f in (schema.FORECAST_VALUE_FIELD, schema.FORECAST_P10_FIELD, schema.FORECAST_P90_FIELD)}
    values = rows[schema.FORECAST_VALUE_FIELD]
    if not values:
        return None
    t = np.array(sorted(values), dtype=np.int64)
    pick = lambda f: np.array([rows[f].get(int(x), np.nan) for x in t], dtype=float)  # noqa: E731
    return Band(name, t, pick(schema.FORECAST_VALUE_FIELD), pick(schema.FORECAST_P10_FIELD),
                pick(schema.FORECAST_P90_FIELD))


def actual(storage, influx: dict, start: datetime, end: datetime, default: tuple[str, str]) -> dict[int, float]:
    """The house's consumption per slot end: `energy_flow` house, or (a house without the flow) its meter."""
    rows = storage.query_series(schema.ENERGY_FLOW, schema.HOUSE_FIELD, start, end)
    if rows:
        return dict(rows)
    readings = storage.query_series(influx.get("measurement") or default[0], influx.get("field") or default[1],
                                    start - timedelta(hours=1), end, influx.get("tags") or None)
    series = counter_to_slots(Readings.from_rows(readings))
    times = series.start_ns + SLOT_NS * np.arange(len(series.values), dtype=np.int64)
    lo, hi = start.timestamp() * 1e9, end.timestamp() * 1e9
    return {int(t): float(v) for t, v in zip(times, series.values, strict=True) if lo <= t < hi and np.isfinite(v)}


def next_day(storage, influx: dict, now: datetime, serving: str | None, default: tuple[str, str]) -> dict:
    """The forecast for the next 24 h (the newest cycle's horizon-96 forecast, with its band), what was said a day
    ahead for the last 24 h and the next (the `day_ahead` issue) and the actual consumption of the last 24 h, for
    the day-ahead model the agent serves (`serving`, from its status; else the first that has forecasts)."""
    now_ns = int(now.timestamp() * 1e9) // SLOT_NS * SLOT_NS
    lo = datetime.fromtimestamp(now_ns / 1e9, UTC) - timedelta(hours=24) + timedelta(seconds=1)
    hi = datetime.fromtimestamp(now_ns / 1e9, UTC) + timedelta(hours=24, seconds=1)
    later = datetime.fromtimestamp(now_ns / 1e9, UTC) + timedelta(seconds=1)
    names = [serving] if serving else []
    names += [n for n in DAY_AHEAD_NAMES if n not in names]
    latest = said = None
    for name in names:
        latest = _forecast(storage, name, "rolling", later, hi)
        if latest is not None:
            said = _forecast(storage, name, "day_ahead", lo, hi)
            break
    return {"now_ns": now_ns, "latest": latest, "said": said,
            "actual": actual(storage, influx, lo, later, default)}
