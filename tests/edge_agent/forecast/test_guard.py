"""The guard on a real agent (influxd, Mosquitto, the model API) with a stepped clock: a signed bundle whose
manifest scaling is skewed (no residual, mean 0.5 kWh, a tiny std: it forecasts 0.5 kWh every slot) in a house
that draws about 0.1 kWh per slot loses to persistence, is kept in the shadow (the baseline it lost to is served
with the reason: forecast points, MQTT, status, log), is served again when a new version arrives, loses again, and
wins again once the house's consumption changes (0.2 and 0.8 kWh alternating by slot and by day: every naive
baseline is then 0.6 kWh off, the constant 0.3). Also: one model failing in a cycle drops neither the other
models' forecasts nor the baselines' scores."""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_agent import forecast
from edge_agent.agent import Agent
from edge_agent.config import ConfigError, load_config
from shared.agent_client import AgentClient
from shared.points import Point
from shared.series import iso
from shared.storage import StorageConfig, open_storage
from tests.helpers.agent import wait_for, write_config
from tests.helpers.forecast import ISSUE, Clock, Retained, load_meter
from tests.helpers.models import TOKEN, agent_config

SLOT = 900 * 10**9
DAY = 96 * SLOT
START = int(ISSUE.timestamp() * 1e9)
CHANGE = START + 9 * 3600 * 10**9  # 21:00 UTC: the house's consumption changes
V1, V2 = "20260101T000000Z", "20260201T000000Z"


def consumption(t: int) -> float:
    """Before the change: a slow wave (period 137 slots: persistence is best, the daily baselines are not);
    after: 0.2 and 0.8 alternating by slot and by day (yesterday, last week and their median are all wrong)."""
    if t < CHANGE:
        return 0.1 + 0.02 * math.sin(2 * math.pi * (t // SLOT) / 137)
    return 0.5 + 0.3 * (-1) ** (t // SLOT + t // DAY)


def write_house(influxd, db: str) -> None:
    counter, points = 1000.123, []
    for t in range(START - 10 * DAY, START + 3 * DAY, SLOT):
        counter += consumption(t)
        points.append(Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": round(counter, 6)}, t))
    open_storage(StorageConfig(url=influxd.url, database=db)).write(points)


def constant(doc: dict) -> None:
    """No residual and a tiny std: whatever the input, the forecast is the manifest's mean (0.5 kWh) ± 0.001."""
    doc["window"].update(residual=None, mean=0.5, std=0.001, scaling={"mean": 0.5, "std": 0.001})


def step(agent: Agent, clock: Clock, boundary_ns: int) -> None:
    clock.set(datetime.fromtimestamp(boundary_ns / 1e9, UTC) + timedelta(seconds=1))
    agent.timer.wake()
    wait_for(lambda: agent.components["forecast"].last_forecast == iso(boundary_ns), timeout=30, interval=0.01)


def points_at(influxd, db: str, target: int, horizon: str = "") -> dict[str, dict]:
    cond = f" AND horizon = '{horizon}'" if horizon else ""
    res = influxd.query(f"SELECT value_kwh, fallback, shadow, input_complete, issued_at FROM forecast WHERE time = "
                        f"{target} AND issue = 'rolling'{cond} GROUP BY *", db=db)["results"][0]
    return {s["tags"]["name"]: dict(zip(s["columns"], s["values"][0], strict=True)) | s["tags"]
            for s in res.get("series", [])}


def shadow_slots(influxd, db: str, version: str) -> list[int]:
    res = influxd.query(f"SELECT error_kwh FROM forecast_skill WHERE \"window\" = 'slot' AND \"name\" = 'cnn-1' AND "
                        f"\"version\" = '{version}'", db=db)["results"][0]
    return [row[0] for s in res.get("series", []) for row in s["values"]]


@pytest.fixture
def guarded(tmp_path, mosquitto_session, influxd_session, influx_db_name, server_keys):
    write_house(influxd_session, influx_db_name)
    cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys,
                       forecast_extra="guard_days = 1\nguard_min_slots_1 = 16")
    clock = Clock(ISSUE - timedelta(seconds=30))
    agent = Agent(load_config(cfg), clock=clock, components=("forecast", "api"))
    sub = Retained(mosquitto_session.port, "he-test/#")
    agent.start()
    yield agent, clock, sub
    sub.close()
    agent.stop()


def test_a_model_that_loses_is_kept_in_the_shadow_and_served_again_when_it_wins(guarded, influxd_session,
                                                                                 influx_db_name, signed, caplog):
    caplog.set_level(logging.WARNING, logger="edge_agent.forecast.component")
    agent, clock, sub = guarded
    client = AgentClient(agent.components["api"].url, TOKEN)
    assert client.push(signed("cnn-1", V1, mutate=constant))["status"] == "active"
    first = START - SLOT
    wait_for(lambda: agent.components["forecast"].last_forecast == iso(first))

    # v1 forecasts 0.5 kWh where the house draws 0.1: after 16 scored slots the guard takes it out of service
    t = first
    while client.status()["guard"]["models"]["cnn-1"]["state"] != "shadow":
        assert t < first + 20 * SLOT, client.status()["guard"]
        t += SLOT
        step(agent, clock, t)
    assert t == first + 16 * SLOT
    status = client.status()
    verdict = status["guard"]["models"]["cnn-1"]
    assert verdict["version"] == V1 and verdict["slots"] == 16 and verdict["baseline"] == "persistence"
    assert verdict["skill"] < -10 and verdict["since"] == iso(t)
    assert re.fullmatch(rf"guard: cnn-1 {V1} lost to persistence over the last 1 day \(MAE 0\.[34]\d+ vs "
                        r"0\.00\d+ kWh on 16 slots, skill -\d+\.\d%; back at a skill of \+2\.0%\)", verdict["reason"])
    assert status["guard"]["serving"]["1"]["model"] == "baseline"
    assert status["guard"]["serving"]["1"]["fallback_reason"] == verdict["reason"]
    # the forecast points say who forecast and why: the baseline served, the model in the shadow
    pts = points_at(influxd_session, influx_db_name, t + SLOT, horizon="1")
    assert set(pts) == {"baseline-1", "cnn-1"}
    assert (pts["baseline-1"]["version"], pts["baseline-1"]["fallback"]) == ("persistence", verdict["reason"])
    assert pts["baseline-1"]["shadow"] is False and pts["baseline-1"]["input_complete"] is True
    assert pts["cnn-1"]["shadow"] is True and pts["cnn-1"]["fallback"] == "" and pts["cnn-1"]["version"] == V1
    assert pts["cnn-1"]["value_kwh"] == pytest.approx(0.5, abs=0.002)
    best = wait_for(lambda: (m := sub.messages.get("he-test/forecast/best/1")) and m["issued_at"] == iso(t) and m)
    assert best["model"] == "baseline" and best["fallback_reason"] == verdict["reason"]
    assert sub.messages["he-test/forecast/cnn/1"]["issued_at"] == iso(t - SLOT)  # a shadow is not published
    skill = wait_for(lambda: (m := sub.messages.get("he-test/forecast/skill/1")) and m["issued_at"] == iso(t) and m)
    assert (skill["name"], skill["version"], skill["state"]) == ("cnn-1", V1, "shadow")
    assert skill["guard_reason"] == verdict["reason"]
    # the verdict in words (shared.verdict), the same in the status and Home Assistant's attribute
    assert re.fullmatch(r"in the shadow \(the baseline serves\): \d+ % worse than the last 15 minutes repeated",
                        verdict["summary"]), verdict["summary"]
    assert skill["summary"] == verdict["summary"]
    assert any("lost to persistence" in r.message and "serving the baseline for horizon 1" in r.message
               for r in caplog.records)

    # in the shadow it is still scored
    before = len(shadow_slots(influxd_session, influx_db_name, V1))
    for _ in range(2):
        t += SLOT
        step(agent, clock, t)
    assert len(shadow_slots(influxd_session, influx_db_name, V1)) == before + 2
    assert client.status()["guard"]["models"]["cnn-1"]["state"] == "shadow"

    # a new version arrives: it is served at once (and judged on its own slots)
    clock.set(datetime.fromtimestamp((t + SLOT // 2) / 1e9, UTC))
    assert client.push(signed("cnn-1", V2, mutate=constant))["status"] == "active"
    wait_for(lambda: sub.messages.get("he-test/forecast/best/1", {}).get("version") == V2)
    learning = client.status()["guard"]["models"]["cnn-1"]
    assert learning["state"] == "learning" and learning["min_slots"] == 16
    assert re.fullmatch(rf"learning: {learning['slots']} of 16 slots scored, about [34] hours left",
                        learning["summary"]), learning
    assert any(f"cnn-1 {V2} replaces {V1}" in r.message for r in caplog.records)
    pushed = t

    # ... and loses too; then the house changes and the constant forecast beats every baseline
    while client.status()["guard"]["models"]["cnn-1"]["state"] != "shadow":
        assert t < CHANGE, client.status()["guard"]
        t += SLOT
        step(agent, clock, t)
    assert t == pushed + 16 * SLOT
    lost_at = t
    while client.status()["guard"]["models"]["cnn-1"]["state"] == "shadow":
        assert t < CHANGE + 30 * 4 * SLOT, client.status()["guard"]
        t += SLOT
        step(agent, clock, t)
    status = client.status()
    verdict = status["guard"]["models"]["cnn-1"]
    assert verdict["state"] == "serving" and verdict["version"] == V2 and verdict["since"] == iso(t)
    assert verdict["skill"] >= 0.02 and verdict["reason"] is None
    assert re.fullmatch(r"\d+ % better than the (same time yesterday|same time last week|median of the same time "
                        r"over the last 7 days|last 15 minutes repeated)", verdict["summary"]), verdict["summary"]
    assert t > CHANGE + 12 * SLOT  # the 1-day window held the lost slots for a while
    assert status["guard"]["serving"]["1"] == {"name": "cnn-1", "model": "cnn", "version": V2,
                                               "fallback_reason": None}
    assert any(f"cnn-1 {V2} wins again" in r.message for r in caplog.records)
    best = wait_for(lambda: (m := sub.messages.get("he-test/forecast/best/1")) and m["issued_at"] == iso(t) and m)
    assert (best["model"], best["version"], best["fallback_reason"]) == ("cnn", V2, None)
    # scored in the shadow all along: one slot per cycle from its first forecast to now
    assert len(shadow_slots(influxd_session, influx_db_name, V2)) == (t - pushed) // SLOT
    assert lost_at < CHANGE
    # every forecast point carries its provenance
    res = influxd_session.query("SELECT count(value_kwh) AS v, count(fallback) AS f, count(input_complete) AS c, "
                                "count(shadow) AS s FROM forecast", db=influx_db_name)["results"][0]
    [[_, v, f, c, s]] = res["series"][0]["values"]
    assert v == f == c == s > 0


def test_one_model_failing_drops_neither_the_others_nor_the_baselines(tmp_path, mosquitto_session, influxd_session,
                                                                      influx_db_name, server_keys, signed):
    load_meter(influxd_session, influx_db_name, ISSUE + timedelta(hours=2))
    cfg = load_config(agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                                   server_keys))
    clock = Clock(ISSUE - timedelta(seconds=30))
    agent = Agent(cfg, clock=clock, components=("forecast", "api"))
    agent.start()
    try:
        client = AgentClient(agent.components["api"].url, TOKEN)
        for name in ("cnn-1", "lstm-1", "cnn-96", "lstm-96"):
            client.push(signed(name, V1))
        fc = agent.components["forecast"]

        def settled() -> bool:  # the activations' cycles have all run: nothing pending, none running
            before = agent.health.get("forecast_cycles")
            time.sleep(0.5)
            return (len(fc.last_results) == 4 and all(j.triggered is None for j in agent.timer.jobs)
                    and agent.health.get("forecast_cycles") == before)

        wait_for(settled)
        loaded = agent.ctx.models().loaded()

        def raises(series, issue_ns, band_scale=1.0):
            raise RuntimeError("interpreter crashed")

        def nan(series, issue_ns, band_scale=1.0, real=loaded["cnn-96"].predict):
            out = real(series, issue_ns, band_scale)
            out.values[3] = np.nan
            return out

        loaded["lstm-1"].predict, loaded["cnn-96"].predict = raises, nan
        errors = agent.health.get("inference_errors")
        step(agent, clock, START)
        assert agent.health.get("inference_errors") == errors + 2
        pts = points_at(influxd_session, influx_db_name, START + SLOT)
        issued = {n: p["model"] for n, p in pts.items() if p["issued_at"] == iso(START)}
        assert issued == {"cnn-1": "cnn", "lstm-96": "lstm"}  # no baseline needed
        step(agent, clock, START + SLOT)  # the slot is over: scored for the models that forecast it, and baselines
        res = influxd_session.query(f"SELECT error_kwh FROM forecast_skill WHERE \"window\" = 'slot' AND "
                                    f"time = {START + SLOT} AND horizon = '1' GROUP BY \"name\"", db=influx_db_name)
        scored = {s["tags"]["name"] for s in res["results"][0]["series"]}
        assert scored == {"cnn-1", "persistence", "same_slot_yesterday", "same_slot_last_week", "median_7_days"}

        # every next-slot model fails: the baseline stands in and says why; the day-ahead models are untouched
        loaded["cnn-1"].predict = raises
        step(agent, clock, START + 2 * SLOT)
        pts = points_at(influxd_session, influx_db_name, START + 3 * SLOT)
        issued = {n: p["model"] for n, p in pts.items() if p["issued_at"] == iso(START + 2 * SLOT)}
        assert issued == {"baseline-1": "baseline", "lstm-96": "lstm"}
        assert pts["baseline-1"]["fallback"] == ("cnn-1: RuntimeError: interpreter crashed; "
                                                 "lstm-1: RuntimeError: interpreter crashed")
        skill = client.status()["skill"]["horizons"]["1"]
        assert skill["scored_until"] == iso(START + 2 * SLOT)
    finally:
        agent.stop()


@pytest.mark.parametrize(("line", "key"), [("guard_days = 0", "guard_days"), ("guard_days = 31", "guard_days"),
                                           ("guard_min_slots_1 = 0", "guard_min_slots_1"),
                                           ("guard_min_slots_96 = -5", "guard_min_slots_96"),
                                           ("guard_return_skill = 1.5", "guard_return_skill"),
                                           ('guard = "yes"', "guard")])
def test_guard_settings_are_checked_and_the_error_names_the_key(tmp_path, line, key):
    cfg = load_config(write_config(tmp_path, 1883, "http://127.0.0.1:8086", "energy", extra=f"[forecast]\n{line}\n"))
    with pytest.raises(ConfigError, match=rf"\[forecast\]\.?.*\b{key}\b"):
        forecast.SPEC.parse(cfg)
    defaults = forecast.SPEC.parse(load_config(write_config(tmp_path / "ok", 1883, "http://127.0.0.1:8086", "energy",
                                                            extra="[forecast]\n")))
    assert (defaults.guard, defaults.guard_days, defaults.guard_min_slots_1, defaults.guard_min_slots_96,
            defaults.guard_return_skill) == (True, 7.0, 300, 480, 0.02)


def test_the_houses_holidays_are_checked_and_reported_in_the_status(tmp_path):
    """[forecast] holidays: the code a server's trainings for this house use; a code the holidays package does not
    know is a config error naming the key."""
    for line in ('holidays = "XX"', 'holidays = "de"', 'holidays = "DE-ZZ"'):
        cfg = load_config(write_config(tmp_path / line[12:14], 1883, "http://127.0.0.1:8086", "energy",
                                       extra=f"[forecast]\n{line}\n"))
        with pytest.raises(ConfigError, match=r"\[forecast\]\.holidays"):
            forecast.SPEC.parse(cfg)
    cfg = load_config(write_config(tmp_path / "ok", 1883, "http://127.0.0.1:8086", "energy",
                                   extra='[forecast]\nholidays = "DE-HE"\ntimezone = "Europe/Berlin"\n'))
    assert forecast.SPEC.parse(cfg).holidays == "DE-HE"
