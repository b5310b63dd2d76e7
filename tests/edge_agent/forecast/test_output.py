"""What a cycle writes and publishes (edge_agent/forecast/output.py), built without influxd or a broker: the points
of the rolling and the day-ahead issue, and the payload's band and away fields."""

from __future__ import annotations

import json

import numpy as np

from edge_agent.forecast.away import AwayWindow
from edge_agent.forecast.horizon import HorizonResult
from edge_agent.forecast.output import cycle_points, payload
from shared.schema import SLOT_NS
from shared.series import iso, parse_time_ns

ISSUE = parse_time_ns("2023-07-05T00:00:00Z")


def results() -> list[HorizonResult]:
    day = np.full(96, 0.25)
    p10, p90 = day - 0.1, day + 0.1
    p10[1] = np.nan
    away = np.zeros(96, bool)
    away[5:] = True
    return [HorizonResult("baseline-1", "baseline", "persistence", 1, np.array([0.3]), fallback="no model"),
            HorizonResult("cnn-96", "cnn", "v1", 96, day, p10=p10, p90=p90, band_scale=1.25, away=away,
                          temperature="measured")]


def test_points_of_the_rolling_issue_and_once_a_day_the_day_ahead_issue():
    rolling = cycle_points(ISSUE, results(), day_ahead=False)
    assert len(rolling) == 97 and {p.tags["issue"] for p in rolling} == {"rolling"}
    both = cycle_points(ISSUE, results(), day_ahead=True)
    day_ahead = [p for p in both if p.tags["issue"] == "day_ahead"]
    assert len(both) == 97 + 96 and {p.tags["name"] for p in day_ahead} == {"cnn-96"}
    first = rolling[0]
    assert first.time_ns == ISSUE + SLOT_NS and first.tags == {"model": "baseline", "version": "persistence",
                                                               "horizon": "1", "name": "baseline-1",
                                                               "issue": "rolling"}
    assert first.fields == {"value_kwh": 0.3, "issued_at": iso(ISSUE), "fallback": "no model",
                            "input_complete": True, "shadow": False}
    slot0, slot1, slot5 = rolling[1], rolling[2], rolling[6]
    assert (slot0.fields["p10_kwh"], slot0.fields["p90_kwh"], slot0.fields["band_scale"]) == (0.15, 0.35, 1.25)
    assert "p10_kwh" not in slot1.fields and "away" not in slot1.fields  # the band is unknown there
    assert slot5.fields["away"] is True and slot5.fields["temperature_source"] == "measured"
    assert slot5.time_ns == ISSUE + 6 * SLOT_NS


def test_payload_band_and_away_fields():
    base, day = results()
    doc = json.loads(payload(ISSUE, base))
    assert doc["fallback_reason"] == "no model" and doc["next_kwh"] == 0.3 and "p10" not in doc and "away" not in doc
    window = AwayWindow(ISSUE, ISSUE + 96 * SLOT_NS)
    doc = json.loads(payload(ISSUE, day, away_on=True, window=json.loads(window.to_payload())))
    assert doc["fallback_reason"] is None and doc["total_kwh"] == 24.0 and doc["first_target"] == iso(ISSUE + SLOT_NS)
    assert doc["p10"][:2] == [0.15, None] and doc["next_p90_kwh"] == 0.35 and doc["band_scale"] == 1.25
    assert doc["away"] == json.loads(window.to_payload()) and doc["away_slots"] == 91
    assert doc["temperature_source"] == "measured"
    home = json.loads(payload(ISSUE, day, away_on=True, window=None))
    assert home["away"] is None
    assert "away" not in json.loads(payload(ISSUE, day))  # no away input configured: no away fields
