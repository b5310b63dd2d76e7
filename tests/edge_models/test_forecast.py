"""Forecasts on schedule (time driven by the test), written to influxd and published retained on MQTT,
baseline fallback without models or with a gappy window, Home Assistant discovery payloads."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config
from shared.agent_client import AgentClient
from shared.points import Point
from shared.series import iso, parse_time_ns, read_csv
from tests.edge.agentutil import wait_for
from tests.edge_models.conftest import TOKEN, agent_config
from tests.support.services import Influxd

ISSUE = datetime(2023, 7, 5, 12, 0, tzinfo=UTC)
CSV = "data/seed_house/raw_data.csv"


class Clock:
    def __init__(self, now: datetime):
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def set(self, now: datetime) -> None:
        with self.lock:
            self.now = now


def load_meter(influxd: Influxd, db: str, until: datetime, days: int = 9, drop: tuple | None = None) -> None:
    rows = read_csv(CSV)
    end = parse_time_ns(iso(int(until.timestamp() * 1e9)))
    sel = (rows.times > end - days * 86400 * 10**9) & (rows.times <= end)
    if drop:
        sel &= ~((rows.times > parse_time_ns(drop[0])) & (rows.times <= parse_time_ns(drop[1])))
    from shared.storage import StorageConfig, open_storage

    open_storage(StorageConfig(url=influxd.url, database=db)).write(
        [Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": float(v)}, int(t))
         for t, v in zip(rows.times[sel], rows.values[sel], strict=True)])


def _decode(payload: bytes):
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode()  # "online"/"offline" on the availability topic


class Retained:
    """Collects retained/published messages under a topic filter."""

    def __init__(self, port: int, topic: str):
        self.messages: dict[str, dict] = {}
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{time.time_ns()}")
        self.c.on_message = lambda c, u, m: self.messages.__setitem__(m.topic, _decode(m.payload))
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def forecast_rows(influxd, db, where=""):
    res = influxd.query(f'SELECT value_kwh, issued_at FROM forecast {where} GROUP BY *', db=db)["results"][0]
    out = []
    for s in res.get("series", []):
        for t, v, issued in s["values"]:
            out.append({**s["tags"], "time": t, "value": v, "issued_at": issued})
    return out


@pytest.fixture
def scheduled_agent(tmp_path, mosquitto_session, influxd_session, influx_db_name, server_keys):
    clock = Clock(ISSUE - timedelta(seconds=30))
    cfg = load_config(agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                                   server_keys))
    agent = Agent(cfg, clock=clock, components=("forecast", "api"))
    sub = Retained(mosquitto_session.port, "#")
    agent.start()
    yield agent, clock, sub
    sub.close()
    agent.stop()


def test_baseline_on_schedule_then_models_after_push(scheduled_agent, influxd_session, influx_db_name, signed):
    agent, clock, sub = scheduled_agent
    load_meter(influxd_session, influx_db_name, ISSUE)
    # HA discovery configs, retained, at start
    disc = wait_for(lambda: sub.messages.get("homeassistant/sensor/testnode/consumption_next_15min/config"))
    assert disc["state_topic"] == "he-test/forecast/best/1" and disc["unit_of_measurement"] == "kWh"
    assert "value_json.next_kwh" in disc["value_template"] and disc["device_class"] == "energy"
    assert "state_class" not in disc and "object_id" not in disc
    assert disc["availability_topic"] == "he-test/status" and disc["expire_after"] > 0
    assert wait_for(lambda: sub.messages.get("he-test/status")) == "online"
    day = sub.messages["homeassistant/sensor/testnode/consumption_next_24h/config"]
    assert day["state_topic"] == "he-test/forecast/best/96" and "total_kwh" in day["value_template"]
    assert not forecast_rows(influxd_session, influx_db_name)  # nothing before the boundary
    clock.set(ISSUE + timedelta(seconds=1))  # the boundary passes: the loop forecasts (no model: baselines)
    rows = wait_for(lambda: len(r := forecast_rows(influxd_session, influx_db_name, "WHERE issue = 'rolling'"))
                    == 97 and r, timeout=10)
    assert {r["model"] for r in rows} == {"baseline"}
    assert {r["version"] for r in rows} == {"persistence", "median_7_days"}
    nxt = [r for r in rows if r["horizon"] == "1"][0]
    assert nxt["time"] == parse_time_ns("2023-07-05T12:15:00Z") and nxt["issued_at"] == "2023-07-05T12:00:00Z"
    series = read_csv(CSV)
    i = list(series.times).index(parse_time_ns("2023-07-05T12:00:00Z"))
    assert nxt["value"] == pytest.approx(series.values[i] - series.values[i - 1], rel=1e-9)  # persistence
    best1 = wait_for(lambda: sub.messages.get("he-test/forecast/best/1"))
    assert best1["model"] == "baseline" and best1["next_kwh"] == pytest.approx(nxt["value"], abs=1e-4)
    assert len(sub.messages["he-test/forecast/baseline/96"]["values"]) == 96

    # push all four signed bundles: each activation triggers a forecast with the models
    client = AgentClient(agent.components["api"].url, TOKEN)
    for name in ("cnn-1", "lstm-1", "cnn-96", "lstm-96"):
        assert client.push(signed(name, "20260101T000000Z"))["status"] == "active"
    result = client.forecast_now()
    assert {f["name"] for f in result["forecasts"]} == {"cnn-1", "lstm-1", "cnn-96", "lstm-96"}
    rows = forecast_rows(influxd_session, influx_db_name, "WHERE model != 'baseline'")
    assert {(r["model"], r["horizon"]) for r in rows} == {("cnn", "1"), ("lstm", "1"), ("cnn", "96"), ("lstm", "96")}
    assert all(0 <= r["value"] < 5 for r in rows)
    wait_for(lambda: sub.messages.get("he-test/forecast/best/96", {}).get("model") == "cnn")
    assert sub.messages["he-test/forecast/lstm/1"]["version"] == "20260101T000000Z"
    st = client.status()
    assert st["last_forecast"] == "2023-07-05T12:00:00Z" and st["counters"]["forecast_cycles"] >= 2


def test_gappy_window_falls_back_to_baseline(tmp_path, mosquitto_session, influxd_session, influx_db_name,
                                             server_keys, signed):
    # the last 6 hours are missing: models cannot run, the 7-day median still can
    load_meter(influxd_session, influx_db_name, ISSUE, drop=("2023-07-05T06:00:00Z", "2023-07-05T12:00:00Z"))
    cfg = load_config(agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                                   server_keys))
    agent = Agent(cfg, clock=lambda: ISSUE, components=("forecast", "api"))
    agent.start()
    try:
        client = AgentClient(agent.components["api"].url, TOKEN)
        client.push(signed("cnn-96", "20260101T000000Z"))
        results = agent.components["forecast"].run_once(parse_time_ns("2023-07-05T12:00:00Z"))
        # next slot: no last value, so not persistence but the next baseline that has history
        assert [(r.model, r.version, r.horizon) for r in results] == [("baseline", "same_slot_yesterday", 1),
                                                                      ("baseline", "median_7_days", 96)]
        assert agent.health.get("incomplete_windows") >= 1
    finally:
        agent.stop()
