"""What a forecast cycle writes and publishes, as data (no I/O): the `forecast` points and the retained JSON
payloads of `<prefix>/forecast/<kind>/<horizon>` (docs/architecture.md, "Measurement schema"; docs/edge-models.md).
The component (edge_agent/forecast/component.py) sends them; here they can be checked without influxd or a broker.
"""

from __future__ import annotations

import json

import numpy as np

from edge_agent.forecast.horizon import HorizonResult
from shared import schema
from shared.points import Point
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import iso


def cycle_points(issue_ns: int, results: list[HorizonResult], day_ahead: bool) -> list[Point]:
    """Every result's points as the `rolling` issue; on the day-ahead cycle the day-ahead forecasts once more as
    the `day_ahead` issue (never overwritten: what was said a day ahead)."""
    rolling, day_ahead_issue = schema.FORECAST_ISSUES
    points = [p for r in results for p in result_points(issue_ns, r, rolling)]
    if day_ahead:
        points += [p for r in results if r.horizon == SLOTS_PER_DAY
                   for p in result_points(issue_ns, r, day_ahead_issue)]
    return points


def result_points(issue_ns: int, r: HorizonResult, issue: str) -> list[Point]:
    """One point per target slot (time = the slot's end)."""
    tags = {"model": r.model, "version": r.version, "horizon": str(r.horizon), "name": r.name, "issue": issue}
    issued = iso(issue_ns)
    return [Point(schema.FORECAST, tags, {schema.FORECAST_VALUE_FIELD: float(v),
                                          schema.FORECAST_ISSUED_FIELD: issued,
                                          schema.FORECAST_FALLBACK_FIELD: r.fallback,
                                          schema.FORECAST_COMPLETE_FIELD: r.input_complete,
                                          schema.FORECAST_SHADOW_FIELD: r.shadow,
                                          **band_fields(r, k),
                                          **({schema.FORECAST_TEMPERATURE_FIELD: r.temperature}
                                             if r.temperature else {})},
                  issue_ns + (k + 1) * SLOT_NS) for k, v in enumerate(r.values)]


def band_fields(r: HorizonResult, k: int) -> dict:
    """p10_kwh/p90_kwh where the band is known, away = true where the empty-house profile was used."""
    out: dict = {}
    if r.p10 is not None and r.p90 is not None and np.isfinite(r.p10[k]) and np.isfinite(r.p90[k]):
        out = {schema.FORECAST_P10_FIELD: float(r.p10[k]), schema.FORECAST_P90_FIELD: float(r.p90[k]),
               schema.FORECAST_BAND_SCALE_FIELD: float(r.band_scale)}
    if r.away is not None and r.away[k]:
        out[schema.FORECAST_AWAY_FIELD] = True
    if r.cost is not None and np.isfinite(r.cost[k]):
        out[schema.FORECAST_COST_FIELD] = float(r.cost[k])
    return out


def payload(issue_ns: int, r: HorizonResult, away_on: bool = False, window: dict | None = None) -> str:
    """The retained JSON of one forecast; `away_on`: the away input is configured (`window`: its current window's
    {from, to}, None when home)."""
    return json.dumps({"issued_at": iso(issue_ns), "name": r.name, "model": r.model, "version": r.version,
                       "horizon": r.horizon, "unit": "kWh", "fallback_reason": r.fallback or None,
                       "input_complete": r.input_complete, "next_kwh": round(float(r.values[0]), 4),
                       "total_kwh": round(float(np.sum(r.values)), 3),
                       "first_target": iso(issue_ns + SLOT_NS),
                       "values": [round(float(v), 4) for v in r.values], **band_payload(r, away_on, window),
                       **({"temperature_source": r.temperature} if r.temperature else {})})


def band_payload(r: HorizonResult, away_on: bool = False, window: dict | None = None) -> dict:
    """`p10`/`p90` lists (null where unknown) and `next_p10_kwh`/`next_p90_kwh`; `away` = the away window's
    {from, to} (null when home) and `away_slots`, the slots that got the empty-house profile."""
    def rounded(a: np.ndarray) -> list:
        return [round(float(v), 4) if np.isfinite(v) else None for v in a]

    out: dict = {}
    if r.p10 is not None and r.p90 is not None:
        p10, p90 = rounded(r.p10), rounded(r.p90)
        out = {"p10": p10, "p90": p90, "next_p10_kwh": p10[0], "next_p90_kwh": p90[0],
               "band_scale": r.band_scale}
    if away_on and r.horizon == SLOTS_PER_DAY:
        out["away"] = window
        out["away_slots"] = int(r.away.sum()) if r.away is not None else 0
    return out
