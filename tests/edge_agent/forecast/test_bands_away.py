"""A real agent (Mosquitto, influxd, LiteRT): P10/P90 bands written and published, an older bundle without a band
still forecasting, and the away input (retained window, Home Assistant switch, restart, bad payloads)."""

from __future__ import annotations

import json

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from shared import away as empty_house
from shared.agent_client import AgentClient
from shared.series import parse_time_ns
from tests.helpers.agent import Agents, wait_for
from tests.helpers.forecast import ISSUE, Retained, load_meter
from tests.helpers.models import TOKEN, agent_config

T = parse_time_ns("2023-07-05T12:00:00Z")


def _rows(influxd, db, where):
    res = influxd.query(f"SELECT value_kwh, p10_kwh, p90_kwh, away FROM forecast WHERE {where} GROUP BY *",
                        db=db)["results"][0]
    return [dict(zip(s["columns"], v, strict=True)) | s["tags"] for s in res.get("series", []) for v in s["values"]]


class Publisher:
    def __init__(self, port: int):
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def send(self, topic: str, payload: str, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def agent_env(tmp_path, mosquitto_session, influxd_session, influx_db_name, server_keys):
    load_meter(influxd_session, influx_db_name, ISSUE)
    cfg_path = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys)
    pub = Publisher(mosquitto_session.port)
    pub.send("he-test/away", "", retain=True)  # the session broker: no window left from another test
    agents = Agents(cfg_path, clock=lambda: ISSUE)
    yield agents.start, agents.stop, pub
    agents.stop_all()
    pub.send("he-test/away", "", retain=True)
    pub.close()


def test_models_write_and_publish_their_band_and_an_older_bundle_runs_without(agent_env, influxd_session,
                                                                               influx_db_name, signed,
                                                                               mosquitto_session):
    start, _, _ = agent_env
    agent = start()
    sub = Retained(mosquitto_session.port, "he-test/forecast/#")
    try:
        client = AgentClient(agent.components["api"].url, TOKEN)
        client.push(signed("cnn-1", "20260101T000000Z"))
        client.push(signed("cnn-96", "20260101T000000Z"))
        old = signed("lstm-96", "20260101T000000Z", mutate=lambda d: d.pop("intervals"))  # a bundle from before
        client.push(old)
        agent.components["forecast"].run_once(T)
        for name, n in (("cnn-1", 1), ("cnn-96", 96)):
            rows = _rows(influxd_session, influx_db_name, f"\"name\" = '{name}' AND issue = 'rolling'")
            assert len(rows) == n
            assert all(0 <= r["p10_kwh"] <= r["value_kwh"] <= r["p90_kwh"] for r in rows)
            assert sum(r["p90_kwh"] - r["p10_kwh"] for r in rows) > 0
        old_rows = _rows(influxd_session, influx_db_name, "\"name\" = 'lstm-96' AND issue = 'rolling'")
        assert len(old_rows) == 96 and all(r["p10_kwh"] is None and r["p90_kwh"] is None for r in old_rows)
        day = wait_for(lambda: sub.messages.get("he-test/forecast/cnn/96"))
        assert len(day["p10"]) == len(day["p90"]) == 96 and day["away"] is None and day["away_slots"] == 0
        assert all(lo <= v <= hi for lo, v, hi in zip(day["p10"], day["values"], day["p90"], strict=True))
        nxt = wait_for(lambda: sub.messages.get("he-test/forecast/cnn/1"))
        assert nxt["next_p10_kwh"] <= nxt["next_kwh"] <= nxt["next_p90_kwh"]
        assert nxt["band_scale"] == day["band_scale"] == 1.0  # nothing scored yet: the table as calibrated
        assert "p10" not in wait_for(lambda: sub.messages.get("he-test/forecast/lstm/96"))
    finally:
        sub.close()


def _away_rows(influxd, db):
    return _rows(influxd, db, "\"name\" = 'cnn-96' AND issue = 'rolling' AND away = true")


def test_away_window_switch_restart_and_bad_payloads(agent_env, influxd_session, influx_db_name, signed,
                                                    mosquitto_session):
    start, stop, pub = agent_env
    sub = Retained(mosquitto_session.port, "#")
    try:
        # set by anyone as a retained window: away from 18:00 to 06:00 UTC the next morning
        pub.send("he-test/away", json.dumps({"from": "2023-07-05T18:00:00Z", "to": "2023-07-06T06:00:00Z"}),
                 retain=True)
        agent = start()
        fc = agent.components["forecast"]
        AgentClient(agent.components["api"].url, TOKEN).push(signed("cnn-96", "20260101T000000Z"))
        wait_for(lambda: fc.away.window is not None)
        dev = wait_for(lambda: sub.messages.get("homeassistant/device/testnode/config"))
        switch = dev["cmps"]["away"]  # a component of the agent's device config (availability: the device's)
        assert switch["p"] == "switch" and dev["availability_topic"] == "he-test/status"
        assert switch["command_topic"] == "he-test/away/set" and switch["state_topic"] == "he-test/away/state"
        results = fc.run_once(T)
        series = fc.read_series(T)
        model_values = fc.active.loaded()["cnn-96"].predict(series, T).values
        p10, p50, p90 = empty_house.profile(series, T, 96)
        inside = np.zeros(96, bool)
        inside[24:72] = True  # slots ending 18:15 … 06:00: their middles lie in [18:00, 06:00)
        r = next(r for r in results if r.name == "cnn-96")
        np.testing.assert_allclose(r.values[inside], p50[inside])
        np.testing.assert_allclose(r.values[~inside], model_values[~inside])
        np.testing.assert_allclose(r.p90[inside], p90[inside])
        assert np.all(p50[inside] < model_values[inside])  # an empty house draws less than the model expects
        rows = _away_rows(influxd_session, influx_db_name)
        assert len(rows) == 48 and all(r["p10_kwh"] <= r["value_kwh"] <= r["p90_kwh"] for r in rows)
        day = wait_for(lambda: sub.messages.get("he-test/forecast/cnn/96"))
        assert day["away"] == {"from": "2023-07-05T18:00:00Z", "to": "2023-07-06T06:00:00Z"}
        assert day["away_slots"] == 48
        assert wait_for(lambda: sub.messages.get("he-test/away/state")) == "OFF"  # not yet: it starts at 18:00

        # the Home Assistant switch: ON = away from now until switched off
        pub.send("he-test/away/set", "ON")
        wait_for(lambda: sub.messages.get("he-test/away/state") == "ON")
        # the window and the state are two messages: the subscriber may see the state first
        wait_for(lambda: sub.messages.get("he-test/away") == {"from": "2023-07-05T12:00:00Z", "to": None})
        assert len(next(r for r in fc.run_once(T) if r.name == "cnn-96").away.nonzero()[0]) == 96

        # a restart keeps it: the broker holds the retained window
        stop(agent)
        agent = start()
        wait_for(lambda: agent.components["forecast"].away.window is not None)
        assert agent.components["forecast"].away.window.end_ns is None

        # bad payloads are counted and leave the state as it was
        pub.send("he-test/away", '{"from": "yesterday"}', retain=True)
        pub.send("he-test/away/set", "MAYBE")
        wait_for(lambda: agent.health.get("away_invalid") >= 2)
        assert agent.components["forecast"].away.window.end_ns is None

        # OFF: home again, the window is cleared and no forecast is marked
        pub.send("he-test/away/set", "OFF")
        wait_for(lambda: sub.messages.get("he-test/away/state") == "OFF")
        wait_for(lambda: sub.messages.get("he-test/away") == "")
        results = agent.components["forecast"].run_once(T + 900 * 10**9)
        assert all(r.away is None for r in results)
    finally:
        sub.close()


HOSTILE_WINDOWS = [
    '{"to": "9999-12-31T23:59:59-14:00"}',  # the agent could not print it: every MQTT forecast failed
    '{"from": "0001-01-01T00:00:00+14:00"}',  # before year 1 in UTC: OverflowError, not ValueError
    '{"from": "2022-01-01T00:00:00Z", "to": "2022-01-02T00:00:00Z"}',  # ended long before ISSUE: stale
    "[" * 100_000,  # RecursionError in json: killed the away client's thread for good
]


def test_hostile_away_payloads_are_refused_and_the_listener_survives(agent_env, mosquitto_session):
    """Issue 23, items 2 and 3, through a real broker: each hostile retained window is refused and counted, the
    forecasts keep publishing, and the same connection still takes the next valid window, also after a restart
    with a hostile window retained."""
    start, stop, pub = agent_env
    sub = Retained(mosquitto_session.port, "he-test/forecast/#")
    try:
        agent = start()
        fc = agent.components["forecast"]
        for i, payload in enumerate(HOSTILE_WINDOWS, 1):
            pub.send("he-test/away", payload, retain=True)
            wait_for(lambda i=i: agent.health.get("away_invalid") == i)
            assert fc.away.window is None
        assert fc.away.client._thread is not None and fc.away.client._thread.is_alive()
        fc.run_once(T)
        day = wait_for(lambda: sub.messages.get("he-test/forecast/best/96"))
        assert day["away"] is None
        pub.send("he-test/away", json.dumps({"from": "2023-07-05T18:00:00Z", "to": "2024-07-01T00:00:00Z"}),
                 retain=True)
        wait_for(lambda: fc.away.window is not None)
        fc.run_once(T)  # (an earlier cycle's message may still arrive: wait for this one's)
        day = wait_for(lambda: (d := sub.messages.get("he-test/forecast/best/96")) and d["away"] and d)
        assert day["away"] == {"from": "2023-07-05T18:00:00Z", "to": "2024-07-01T00:00:00Z"}

        pub.send("he-test/away", "[" * 100_000, retain=True)
        wait_for(lambda: agent.health.get("away_invalid") == len(HOSTILE_WINDOWS) + 1)
        stop(agent)
        agent = start()  # the hostile window comes back retained at the start: refused again
        fc = agent.components["forecast"]
        wait_for(lambda: agent.health.get("away_invalid") == 1)
        pub.send("he-test/away/set", "ON")
        wait_for(lambda: fc.away.window is not None and fc.away.window.end_ns is None)
    finally:
        sub.close()


@pytest.mark.parametrize("payload", HOSTILE_WINDOWS)
def test_parse_window_refuses_what_it_cannot_use(payload):
    from edge_agent.forecast.away import parse_window

    with pytest.raises(ValueError, match="away"):
        parse_window(payload, parse_time_ns("2023-07-05T12:00:00Z"))


def test_parse_window_takes_a_long_holiday():
    from edge_agent.forecast.away import parse_window

    now = parse_time_ns("2023-07-05T12:00:00Z")
    w = parse_window('{"from": "2023-01-10T00:00:00+01:00", "to": "2024-06-30T00:00:00Z"}', now)
    assert w is not None and w.start_ns < now < w.end_ns
    assert parse_window(" ", now) is None
