"""A small hand-made `energy_flow` + `forecast` data set (the contract of issue 18), written straight into influxd,
independent of the flow code, with the figures a person works out by hand.

House in Europe/Berlin. Slots are given by their END in local time; a slot belongs to the local day it ends in.
- June 2023 (CEST, UTC+2): a few slots around midnight and 00:00-02:00 local (which UTC days put elsewhere):
  June 13: house 0.55 (PV 0.30 at noon, grid 0.25 in the slot ending at 24:00), PV 0.50, self_supplied 0.30.
  June 14: house 0.10 (battery, stored PV, 01:00) + 0.60 (PV, 8 slots 11:15-13:00) + 0.20 (battery at 20:00:
  0.05 stored PV, 0.15 stored grid) + 0.20 (grid, slot ending at 24:00) = 1.10 kWh; self_supplied 0.75, so
  autarky 0.75 / 1.10 = 0.682; PV 1.00 of which 0.90 used (house 0.60, battery 0.30): self-consumption 0.90.
  June 15: house 0.30 (grid, 01:30), no PV: self-consumption has no value, autarky 0.
- 28-30 October 2023 (DST ends on the 29th: 25 hours): 0.01 kWh from the grid in every slot, plus 0.40 kWh PV
  in the slot ending 29 Oct 12:00. Days: 0.96, 1.40 (100 slots + PV), 0.96.
- 26 March 2023 (DST starts: 23 hours): 0.01 kWh in each of its 92 slots = 0.92.
- Forecasts for the slots of June 14: day ahead (horizon 96, issue day_ahead, issued 14 June 00:00 local)
  cnn-96 0.10, lstm-96 0.12, baseline-96 0.20 for all 96 slots; the rolling horizon-96 values for the same
  targets (issue rolling, re-issued minutes before) 0.50 / 0.52 / 0.60; next slot (horizon 1, rolling) cnn-1
  0.07, lstm-1 0.09, baseline-1 0.05 for the eight PV slots.
- Live skill rows (`forecast_skill`) every 15 minutes from 12:00 to 13:00 local on June 14 (SKILL).
- Cost ([tariff]) on the June slots: grid import × 0.30 − export × 0.08 (June 13: 0.12 + 0.075 − 0.016 = 0.179;
  June 14: 0.06 − 0.008 (PV export) − 0.008 (battery export) = 0.044; June 15: 0.09); the day-ahead forecasts of
  June 14 carry cost = value × 0.30 per slot (cnn-96 2.88, lstm-96 3.456, baseline-96 5.76 for the day).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.points import Point, to_lines

TZ = "Europe/Berlin"
ZONE = ZoneInfo(TZ)
SLOT = timedelta(minutes=15)
FLOW_INPUTS = ("pv_to_house", "pv_to_battery", "pv_to_grid", "grid_to_house", "grid_to_battery",
               "battery_to_house_pv", "battery_to_house_grid", "battery_to_grid")
SUM_FIELDS = ("grid_import", "grid_export", "pv", "battery_charge", "battery_discharge", "house", "pv_to_house",
              "pv_to_battery", "pv_to_grid", "grid_to_house", "grid_to_battery", "battery_to_house",
              "battery_to_grid", "battery_to_house_pv", "battery_to_house_grid", "self_supplied")
RUN_PV_TO_HOUSE = (0.05, 0.06, 0.07, 0.08, 0.08, 0.09, 0.08, 0.09)  # June 14, slots ending 11:15 ... 13:00


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZONE)


def ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def slot(end: datetime, **flows: float) -> dict:
    """One slot's fields per the contract, every balance exact."""
    unknown = set(flows) - set(FLOW_INPUTS)
    assert not unknown, unknown
    f = {k: float(flows.get(k, 0.0)) for k in FLOW_INPUTS}
    f["battery_to_house"] = f["battery_to_house_pv"] + f["battery_to_house_grid"]
    f["pv"] = f["pv_to_house"] + f["pv_to_battery"] + f["pv_to_grid"]
    f["grid_import"] = f["grid_to_house"] + f["grid_to_battery"]
    f["grid_export"] = f["pv_to_grid"] + f["battery_to_grid"]
    f["battery_charge"] = f["pv_to_battery"] + f["grid_to_battery"]
    f["battery_discharge"] = f["battery_to_house"] + f["battery_to_grid"]
    f["house"] = f["pv_to_house"] + f["battery_to_house"] + f["grid_to_house"]
    f["self_supplied"] = f["pv_to_house"] + f["battery_to_house_pv"]
    if f["pv"] > 0:
        f["self_consumption"] = (f["pv_to_house"] + f["pv_to_battery"]) / f["pv"]
    if f["house"] > 0:
        f["autarky"] = f["self_supplied"] / f["house"]
    return {"end": end.astimezone(UTC), **f, "flags": ""}


def every_slot(first_end: datetime, last_end: datetime, **flows: float) -> list[dict]:
    out, t = [], first_end.astimezone(UTC)
    while t <= last_end.astimezone(UTC):
        out.append(slot(t, **flows))
        t += SLOT
    return out


def slots() -> list[dict]:
    june = [
        slot(local(2023, 6, 13, 3), grid_to_battery=0.4),
        slot(local(2023, 6, 13, 12), pv_to_house=0.3, pv_to_grid=0.2),
        slot(local(2023, 6, 14, 0), grid_to_house=0.25),  # ends at 24:00 on June 13
        slot(local(2023, 6, 14, 1), battery_to_house_pv=0.1),
        *[slot(local(2023, 6, 14, 11) + (k + 1) * SLOT, pv_to_house=v, pv_to_battery=0.0375, pv_to_grid=0.0125)
          for k, v in enumerate(RUN_PV_TO_HOUSE)],
        slot(local(2023, 6, 14, 20), battery_to_house_pv=0.05, battery_to_house_grid=0.15),
        slot(local(2023, 6, 14, 21), battery_to_grid=0.1),
        slot(local(2023, 6, 15, 0), grid_to_house=0.2),  # ends at 24:00 on June 14
        slot(local(2023, 6, 15, 1, 30), grid_to_house=0.3),
    ]
    october = every_slot(local(2023, 10, 28, 0, 15), local(2023, 10, 31, 0, 0), grid_to_house=0.01)
    for s in october:
        if s["end"] == local(2023, 10, 29, 12).astimezone(UTC):
            s.update({k: v for k, v in slot(s["end"], grid_to_house=0.01, pv_to_house=0.4).items()})
    march = every_slot(local(2023, 3, 26, 0, 15), local(2023, 3, 27, 0, 0), grid_to_house=0.01)
    for s in june:
        s["cost"] = s["grid_import"] * PRICE - s["grid_export"] * FEED_IN
    return june + october + march


PRICE, FEED_IN = 0.30, 0.08
COST_BY_DAY = {date(2023, 6, 13): 0.4 * 0.3 - 0.2 * 0.08 + 0.25 * 0.3,
               date(2023, 6, 14): -8 * 0.0125 * 0.08 - 0.1 * 0.08 + 0.2 * 0.3,
               date(2023, 6, 15): 0.3 * 0.3}


JUNE14_TARGETS = [local(2023, 6, 14) + (k + 1) * SLOT for k in range(96)]
DAY_AHEAD = {"cnn-96": 0.10, "lstm-96": 0.12, "baseline-96": 0.20}
ROLLING_96 = {"cnn-96": 0.50, "lstm-96": 0.52, "baseline-96": 0.60}
NEXT_SLOT = {"cnn-1": 0.07, "lstm-1": 0.09, "baseline-1": 0.05}
RUN_TARGETS = [local(2023, 6, 14, 11) + (k + 1) * SLOT for k in range(8)]


def forecasts() -> list[Point]:
    def point(name: str, issue: str, target: datetime, value: float, issued: datetime) -> Point:
        model, horizon = name.split("-")
        return Point("forecast", {"model": model, "version": "baseline" if model == "baseline" else "v1",
                                  "horizon": horizon, "name": name, "issue": issue},
                     {"value_kwh": value, "issued_at": issued.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "p10_kwh": value * 0.5, "p90_kwh": value * 1.5}
                     | ({"cost": value * PRICE} if issue == "day_ahead" else {}), ns(target))
    out = [point(n, "day_ahead", t, v, local(2023, 6, 14)) for n, v in DAY_AHEAD.items() for t in JUNE14_TARGETS]
    out += [point(n, "rolling", t, v, t - 2 * SLOT) for n, v in ROLLING_96.items() for t in JUNE14_TARGETS]
    out += [point(n, "rolling", t, v, t - SLOT) for n, v in NEXT_SLOT.items() for t in RUN_TARGETS]
    return out


# Live skill (`forecast_skill`, one row per cycle and window at the cycle's issue time), June 14 12:00-13:00 local:
# (horizon, issue, model, name, version) -> window -> one (skill, mae_kwh, slots) per SKILL_TIMES (None: no row);
# baselines have no skill. An older version's rows stop when it is replaced.
SKILL_TIMES = [local(2023, 6, 14, 12) + k * SLOT for k in range(5)]
SKILL = {
    ("1", "rolling", "cnn", "cnn-1", "v1"): {"7d": [(0.10 + 0.01 * k, 0.050 - 0.001 * k, 600 + k) for k in range(5)],
                                            "1d": [(0.30, 0.040, 96)] * 5},
    ("1", "rolling", "cnn", "cnn-1", "v0"): {"7d": [(-0.20, 0.070, 300), (-0.21, 0.071, 301), None, None, None]},
    ("96", "day_ahead", "lstm", "lstm-96", "v1"): {"7d": [(-0.05, 0.090, 480 + 96 * (k // 4)) for k in range(5)]},
    ("1", "rolling", "baseline", "persistence", "persistence"): {"7d": [(None, 0.060, 610 + k) for k in range(5)]},
}


def skill_points() -> list[Point]:
    out = []
    for (horizon, issue, model, name, version), windows in SKILL.items():
        tags = {"horizon": horizon, "issue": issue, "model": model, "name": name, "version": version}
        for window, rows in windows.items():
            for t, row in zip(SKILL_TIMES, rows, strict=True):
                if row is None:
                    continue
                skill, mae, n = row
                fields = {"mae_kwh": mae, "rmse_kwh": mae * 1.5, "bias_kwh": -mae / 2, "slots": n}
                if skill is not None:
                    fields |= {"skill": skill, "baseline": "persistence", "baseline_mae_kwh": mae / (1 - skill),
                               "skill_slots": n}
                out.append(Point("forecast_skill", tags | {"window": window}, fields, ns(t)))
    return out


def points() -> list[Point]:
    return [Point("energy_flow", {}, {k: v for k, v in s.items() if k != "end"}, ns(s["end"])) for s in slots()] \
        + forecasts() + skill_points()


def write(influxd, db: str) -> None:
    influxd.query(f'DROP DATABASE "{db}"', method="POST")
    influxd.create_database(db)
    body = to_lines(points())
    assert influxd.write_raw(db, body) == 204
    copy_to_keep(influxd, db)


def copy_to_keep(influxd, db: str, policy: str = "keep") -> None:
    """What the boards read from the agent's keep policy (edge_agent/grafana/generate.py, `--keep-policy`): the
    kept measurements copied there, so that the committed boards' queries run as they stand. (The tests' own
    queries read the default policy.)"""
    influxd.query(f'CREATE RETENTION POLICY "{policy}" ON "{db}" DURATION INF REPLICATION 1', method="POST")
    for m in ("energy_flow", "forecast", "forecast_skill"):
        res = influxd.query(f'SELECT * INTO "{db}"."{policy}"."{m}" FROM "{db}"."autogen"."{m}" GROUP BY *',
                            method="POST")
        assert "error" not in res["results"][0], res


def local_day(end_utc: datetime, tz: str = TZ) -> date:
    """The day a slot belongs to: the local day it ends in (a slot ending at 00:00 is the day before's)."""
    return (end_utc - timedelta(microseconds=1)).astimezone(ZoneInfo(tz)).date()


def days(tz: str = TZ) -> dict[date, dict[str, float]]:
    """The oracle: per local day, the sum of every energy field (what the daily panels must show)."""
    out: dict[date, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SUM_FIELDS, 0.0))
    for s in slots():
        day = out[local_day(s["end"], tz)]
        for k in SUM_FIELDS:
            day[k] += s[k]
    return dict(out)


def ratios(d: dict[str, float]) -> dict[str, float | None]:
    return {"self_consumption": (d["pv_to_house"] + d["pv_to_battery"]) / d["pv"] if d["pv"] > 0 else None,
            "autarky": d["self_supplied"] / d["house"] if d["house"] > 0 else None}
