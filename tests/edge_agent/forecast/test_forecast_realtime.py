"""Issue 18: in a real house the models never ran. Meters report at their own unaligned times, so the slot ending
at the issue time needs the first reading after it; the first release read only up to the issue time, found the
newest slot unknown, called the window incomplete and served the baseline every cycle.

Here the real meter's year is replayed at unaligned, jittered times (two readings around every slot end, 5-55 s
away from it, counters interpolated from the real readings), the models are pushed, and the scheduled cycle at
the boundary + delay must forecast with the models from the newest slot. Also: the agent's availability goes
`offline` on MQTT when it stops, and forecasts issued at the day-ahead time are kept in their own series.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from edge_agent.agent import Agent
from edge_agent.config import load_config
from shared.agent_client import AgentClient
from shared.points import Point
from shared.series import read_csv
from shared.storage import StorageConfig, open_storage
from tests.helpers.agent import wait_for
from tests.helpers.forecast import CSV, ISSUE, Clock, Retained, forecast_rows
from tests.helpers.models import TOKEN, agent_config


def jittered_meter(influxd, db: str, until_ns: int, days: int = 9, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The real meter's readings as a device would send them: never on a slot end. Returns the true slot
    values (kWh) ending at the seed's reading times, to compare with."""
    rows = read_csv(CSV)
    sel = (rows.times > until_ns - days * 86400 * 10**9) & (rows.times <= until_ns)
    t, v = rows.times[sel], rows.values[sel]
    rng = np.random.default_rng(seed)
    points = []
    for i in range(1, len(t) - 1):
        for side in (-1, 1):
            j = i + (1 if side > 0 else -1)
            dt = int(rng.uniform(5, 55) * 1e9)
            when = t[i] + side * dt
            frac = dt / abs(int(t[j]) - int(t[i]))
            value = v[i] + (v[j] - v[i]) * frac
            points.append(Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": round(float(value), 5)},
                                int(when)))
    open_storage(StorageConfig(url=influxd.url, database=db)).write(points)
    return t, v


def test_models_forecast_at_the_boundary_from_unaligned_readings(tmp_path, mosquitto_session, influxd_session,
                                                                  influx_db_name, server_keys, signed):
    issue_ns = int(ISSUE.timestamp() * 1e9)
    jittered_meter(influxd_session, influx_db_name, issue_ns + 3600 * 10**9)  # readings go on after the issue
    clock = Clock(ISSUE - timedelta(minutes=5))
    cfg = load_config(agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                                   server_keys, forecast_extra='day_ahead_at = "14:00"\n'
                                                               'timezone = "Europe/Berlin"'))
    agent = Agent(cfg, clock=clock, components=("forecast", "api"))
    sub = Retained(mosquitto_session.port, "he-test/#")
    agent.start()
    try:
        client = AgentClient(agent.components["api"].url, TOKEN)
        for name in ("cnn-1", "lstm-1", "cnn-96", "lstm-96"):
            assert client.push(signed(name, "20260101T000000Z"))["status"] == "active"
        wait_for(lambda: sub.messages.get("he-test/status") == "online")
        clock.set(ISSUE + timedelta(seconds=1))  # the boundary passes (delay 0: the readings are in)
        rows = wait_for(lambda: [r for r in forecast_rows(influxd_session, influx_db_name,
                                                           "WHERE issue = 'rolling'")
                                 if r["issued_at"] == "2023-07-05T12:00:00Z"] or None, timeout=20)
        assert {r["model"] for r in rows} == {"cnn", "lstm"}, {r["name"] for r in rows}  # no baseline
        assert len(rows) == 2 * 1 + 2 * 96
        assert agent.health.get("incomplete_windows") == 0
        best = wait_for(lambda: (m := sub.messages.get("he-test/forecast/best/1")) and m.get("issued_at") ==
                        "2023-07-05T12:00:00Z" and m)
        assert best["model"] == "cnn" and best["input_complete"] is True and best["fallback_reason"] is None
        # 14:00 in Berlin is 12:00 UTC: this cycle is also the day-ahead issue, kept in its own series
        day = forecast_rows(influxd_session, influx_db_name, "WHERE issue = 'day_ahead'")
        assert {(r["model"], r["horizon"]) for r in day} == {("cnn", "96"), ("lstm", "96")} and len(day) == 192
    finally:
        agent.stop()
    assert wait_for(lambda: sub.messages.get("he-test/status") == "offline", timeout=10)
    sub.close()
