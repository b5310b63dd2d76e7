"""Forecasts on schedule (time driven by the test), written to influxd and published retained on MQTT,
baseline fallback without models or with a gappy window, Home Assistant discovery payloads."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config
from shared.agent_client import AgentClient
from shared.series import parse_time_ns, read_csv
from tests.helpers.agent import wait_for
from tests.helpers.forecast import CSV, ISSUE, Clock, Retained, forecast_rows, load_meter
from tests.helpers.models import TOKEN, agent_config


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
    dev = wait_for(lambda: sub.messages.get("homeassistant/device/testnode/config"))  # one device config
    disc = dev["cmps"]["consumption_next_15min"]
    assert disc["state_topic"] == "he-test/forecast/best/1" and disc["unit_of_measurement"] == "kWh"
    assert "value_json.next_kwh" in disc["value_template"] and disc["device_class"] == "energy"
    assert "state_class" not in disc and "object_id" not in disc
    assert dev["availability_topic"] == "he-test/status" and disc["expire_after"] > 0
    assert wait_for(lambda: sub.messages.get("he-test/status")) == "online"
    day = dev["cmps"]["consumption_next_24h"]
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
        # provenance: neither forecast had its intended input (issue 16): persistence had no last slot, and
        # cnn-96's window was incomplete
        assert [r.input_complete for r in results] == [False, False]
        rows = agent.ctx.open_storage().query("SELECT input_complete FROM forecast WHERE time = "
                                              f"{parse_time_ns('2023-07-05T12:15:00Z')} GROUP BY horizon")
        assert {r["horizon"]: r["input_complete"] for r in rows} == {"1": False, "96": False}
    finally:
        agent.stop()


@pytest.mark.parametrize("hours", [10, 30])
def test_a_fresh_install_forecasts_no_day_from_the_last_15_minutes(tmp_path, mosquitto_session, influxd_session,
                                                                    influx_db_name, server_keys, hours):
    """Issue 25: with less than a day of history "Consumption next 24 h" was 96 × the last slot (persistence). Now:
    nothing until there is a day; then the median of the same slot over the days there are (here: yesterday's)."""
    load_meter(influxd_session, influx_db_name, ISSUE, days=hours / 24)
    cfg = load_config(agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                                   server_keys, api=False))
    agent = Agent(cfg, clock=lambda: ISSUE, components=("forecast",))
    import paho.mqtt.publish

    paho.mqtt.publish.single("he-test/forecast/best/96", "", retain=True, port=mosquitto_session.port)  # earlier tests'
    sub = Retained(mosquitto_session.port, "he-test/forecast/best/#")
    agent.start()
    try:
        fc = agent.components["forecast"]
        issue = parse_time_ns("2023-07-05T12:00:00Z")
        results = fc.run_once(issue)
        series = fc.read_series(issue)
        assert [(r.horizon, r.version) for r in results if r.horizon == 1] == [(1, "persistence")]
        day = [r for r in results if r.horizon == 96]
        if hours < 24:
            assert day == [] and agent.health.get("forecast_skipped_no_data") == 1
            wait_for(lambda: "he-test/forecast/best/1" in sub.messages)
            assert "he-test/forecast/best/96" not in sub.messages
        else:
            [r] = day
            last = series.index_of(issue)
            days = [[series.values[t - 96 * k] for k in range(1, 8) if t - 96 * k >= 0
                     and np.isfinite(series.values[t - 96 * k])] for t in range(last + 1, last + 97)]
            n = [len(d) for d in days]
            assert n == sorted(n) and n[0] == 1 and n[-1] == 2  # 30 hours: two days for the last few hours
            assert r.version == "median_7_days" and r.values.tolist() == pytest.approx([np.median(d) for d in days])
            assert wait_for(lambda: sub.messages.get("he-test/forecast/best/96"))["total_kwh"] == pytest.approx(
                float(r.values.sum()), abs=1e-3)
    finally:
        sub.close()
        agent.stop()
