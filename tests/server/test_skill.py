"""Live skill: the forecasts an agent wrote into its InfluxDB against what its meter then counted, next to the
baseline on the same slots — read from a real influxd, stored by the worker, shown on the overview."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from server import jobs, overview
from server.pull import DEFAULT_SERIES
from server.skill import live_skill
from shared.points import Point
from shared.schema import SLOT_NS
from shared.storage import StorageConfig, open_storage
from tests.helpers.server import AUTH

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _house(influxd_session, db: str):
    """Nine days of a counter (kWh per slot: a daily pattern + noise) and, for the last seven, a next-slot model
    that is off by a known amount and day-ahead forecasts; returns the slot values by end time."""
    rng = np.random.default_rng(3)
    start = NOW - timedelta(days=9)
    n = 9 * 96
    t = [int((start + timedelta(minutes=15 * i)).timestamp() * 1e9) for i in range(n + 1)]
    per_slot = 0.3 + 0.2 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.uniform(0, 0.05, n)
    counter = 100 + np.concatenate([[0], np.cumsum(per_slot)])
    st = open_storage(StorageConfig(url=influxd_session.url, database=db))
    pts = [Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": float(v)}, ts) for ts, v in zip(t, counter,
                                                                                                       strict=True)]
    values = dict(zip(t[1:], per_slot, strict=True))
    # the scored week: [now - 7 days, now), as the queries read it (the slot ending at `now` is not read yet)
    week_ns = (int((NOW - timedelta(days=7)).timestamp() * 1e9), int(NOW.timestamp() * 1e9))
    week = [ts for ts in t[1:] if week_ns[0] <= ts < week_ns[1]]
    for ts in week:
        pts.append(Point("forecast", {"name": "cnn-1", "version": "20260301T000000Z", "issue": "rolling",
                                      "model": "cnn", "horizon": "1"}, {"value_kwh": float(values[ts] + 0.01)}, ts))
        pts.append(Point("forecast", {"name": "cnn-96", "version": "20260301T000000Z", "issue": "day_ahead",
                                      "model": "cnn", "horizon": "96"}, {"value_kwh": float(values[ts] * 1.1)}, ts))
    st.write(pts)
    st.close()
    return values, week


def test_live_skill_against_the_baselines(influxd_session, influx_db_name):
    values, week = _house(influxd_session, influx_db_name)
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    influx = {"measurement": "EnergyMeter", "field": "EnergyIn", "tags": {"device_id": "meter-1"}}
    got = live_skill(st, influx, {"cnn-1": "20260301T000000Z", "cnn-96": "20260301T000000Z",
                                  "lstm-1": "20260301T000000Z"}, NOW, DEFAULT_SERIES)
    st.close()
    assert set(got) == {"cnn-1", "cnn-96"}  # no forecasts of lstm-1: no figure
    persistence = np.mean([abs(values[t - SLOT_NS] - values[t]) for t in week])
    yesterday = np.mean([abs(values[t - 96 * SLOT_NS] - values[t]) for t in week])
    day_ahead = np.mean([abs(values[t] * 0.1) for t in week])
    assert got["cnn-1"]["n"] == len(week) and got["cnn-1"]["mae"] == round(0.01, 4)
    assert got["cnn-1"]["baseline_mae"] == round(persistence, 4)
    assert got["cnn-1"]["skill"] == round(1 - 0.01 / persistence, 3) and got["cnn-1"]["skill"] > 0
    assert got["cnn-96"]["mae"] == round(day_ahead, 4) and got["cnn-96"]["baseline_mae"] == round(yesterday, 4)
    assert got["cnn-96"]["baseline"] == "same slot yesterday"


def test_the_worker_stores_it_and_the_overview_shows_it(app, influxd_session, influx_db_name):
    _house(influxd_session, influx_db_name)
    s = app.extensions["home_energy"]
    node = app.test_client().post("/api/v1/nodes", headers=AUTH, json={
        "name": "pi", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
        "influx": {"url": influxd_session.url, "database": influx_db_name, "tags": {"device_id": "meter-1"}}}).json
    entry = {"version": "20260301T000000Z", "sha256": "a" * 64, "activated_at": "2026-03-01T00:00:00Z"}
    s.db.set_node_status(node["id"], {"reachable": True, "models": {"cnn-1": {"active": entry, "previous": None}},
                                      "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"}})
    w = jobs.Worker(s)
    w.refresh_skill(s.db.node(node["id"]), now=NOW)
    row = next(r for r in overview.rows(s.db) if r["id"] == node["id"])
    cnn = next(m for m in row["models"] if m["name"] == "cnn-1")
    assert cnn["skill"]["mae"] == 0.01 and cnn["skill"]["skill"] > 0, row
