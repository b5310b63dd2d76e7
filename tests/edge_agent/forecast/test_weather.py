"""The temperature input end to end on a real agent (Mosquitto, influxd, LiteRT): a weather bundle trained (quick) with
a temperature record, pushed next to its twin; the measured temperature read through the config's
measurement/field/tags; a Home Assistant-style forecast retained on MQTT; the twin serving with the reason when the
forecast is missing or stale; both scored by the live skill; Open-Meteo fetched from a local HTTP server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from edge_agent.forecast.weather import parse_forecast
from shared import weather as wx
from shared.agent_client import AgentClient
from shared.points import Point
from shared.schema import SLOT_NS
from shared.series import SlotSeries, iso, parse_time_ns
from shared.storage import StorageConfig, open_storage
from tests.helpers.agent import Agents, wait_for
from tests.helpers.forecast import Clock, Retained, load_meter
from tests.helpers.models import TOKEN, agent_config, sign_copy
from training.data import read_local_slots

ROOT = Path(__file__).resolve().parents[3]
HEATPUMP = ROOT / "data" / "heatpump_ch" / "smd_hp_2021_2022.csv"
T0 = datetime(2023, 7, 5, 0, 0, tzinfo=UTC)  # a day-ahead issue (00:00 UTC)
T0_NS = int(T0.timestamp()) * 10**9
HOUR_NS = 3600 * 10**9
YEARS_NS = parse_time_ns("2023-01-01T00:00:00Z") - parse_time_ns("2021-01-01T00:00:00Z")


def real_temperature() -> SlotSeries:
    """The heat pump's real daily temperatures of 2021, moved to the same days of 2023 (the seed house has none)."""
    temp = read_local_slots(HEATPUMP, "Europe/Zurich").temperature
    return SlotSeries(temp.start_ns + YEARS_NS, temp.values)


@pytest.fixture(scope="module")
def weather_bundles(tmp_path_factory) -> Path:
    """cnn-96 and cnn-96-weather, trained --quick on the seed house before June 2023 with that temperature record.
    The rule does not ship the weather bundle (two validation days cannot show a gain): it lands in rejected/, with
    its verdict; the tests use it from there."""
    out = tmp_path_factory.mktemp("weather-bundles")
    temp = real_temperature()
    csv = out / "temperature.csv"
    hourly = [(int(t), v) for t, v in zip(temp.end_ns, temp.values, strict=True) if t % HOUR_NS == 0 and np.isfinite(v)]
    csv.write_text("time,value\n" + "".join(f"{iso(t)},{v}\n" for t, v in hourly))
    r = subprocess.run([sys.executable, "-m", "training", "train", "--data", str(ROOT / "data/seed_house/raw_data.csv"),
                        "--until", "2023-06-01T00:00:00Z", "--out", str(out), "--quick", "--only", "cnn-96-weather",
                        "--temperature", str(csv)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not (out / "cnn-96-weather").exists() and json.loads(r.stdout.splitlines()[-1])["bundles"].keys() == {"cnn-96"}
    (out / "rejected" / "cnn-96-weather").rename(out / "cnn-96-weather")
    doc = json.loads((out / "cnn-96-weather" / "manifest.json").read_text())
    assert doc["window"]["weather"]["timezone"] == "UTC" and "temp_day" in doc["window"]["features"]
    assert doc["metrics"]["weather"]["ship"] is False and "too few" in doc["metrics"]["weather"]["reason"]
    assert "not shipped" in r.stdout + r.stderr or "too few" in r.stdout + r.stderr
    return out


def write_measured(influxd, db: str, temp: SlotSeries, until_ns: int) -> None:
    """Outdoor readings every 30 min for 10 days, as the `home/+room/temperature` rule stores them."""
    points = [Point("sensor", {"room": "outdoor"}, {"temperature": float(v) + 0.3}, int(t))
              for t, v in zip(temp.end_ns, temp.values, strict=True)
              if until_ns - 10 * 24 * HOUR_NS <= t <= until_ns and t % (HOUR_NS // 2) == 0 and np.isfinite(v)]
    open_storage(StorageConfig(url=influxd.url, database=db)).write(points)


def ha_forecast(temp: SlotSeries, issued_ns: int, hours: int = 50) -> str:
    """What the documented Home Assistant automation publishes: weather.get_forecasts' hourly items + issued_at."""
    items = []
    for h in range(hours):
        t = issued_ns + h * HOUR_NS
        v = temp.values[temp.index_of(t)]
        items.append({"datetime": datetime.fromtimestamp(t / 1e9, UTC).astimezone().isoformat(),
                      "condition": "cloudy", "temperature": round(float(v) - 0.5, 1)})
    return json.dumps({"issued_at": iso(issued_ns), "forecast": items})


WEATHER = """
[weather]
measurement = "sensor"
field = "temperature"
tags = { room = "outdoor" }
max_age_h = 24
"""


@pytest.fixture
def env(tmp_path, mosquitto_session, influxd_session, influx_db_name, server_keys, weather_bundles):
    load_meter(influxd_session, influx_db_name, T0 + timedelta(days=1, hours=1), days=10)
    temp = real_temperature()
    write_measured(influxd_session, influx_db_name, temp, T0_NS + 25 * HOUR_NS)
    cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys,
                       forecast_extra=WEATHER)
    clock = Clock(T0)
    agents = Agents(cfg, clock=clock)
    pub = Retained(mosquitto_session.port, "he-test/#")
    pub.c.publish("he-test/weather/forecast", b"", qos=1, retain=True).wait_for_publish(5)  # nothing left over
    yield agents, clock, pub, temp
    agents.stop_all()
    pub.c.publish("he-test/weather/forecast", b"", qos=1, retain=True).wait_for_publish(5)
    pub.close()


def _push(agent, bundles: Path, keys, tmp: Path) -> None:
    client = AgentClient(agent.components["api"].url, TOKEN)
    for name in ("cnn-96", "cnn-96-weather"):
        client.push(sign_copy(bundles / name, tmp / f"signed-{name}", keys, "20260101T000000Z"))


def _by_name(results) -> dict:
    return {r.name: r for r in results}


def test_forecast_over_mqtt_measured_temperature_fallback_stale_and_skill(env, weather_bundles, server_keys, tmp_path,
                                                                         influxd_session, influx_db_name):
    agents, clock, pub, temp = env
    agent = agents.start()
    fc = agent.components["forecast"]
    _push(agent, weather_bundles, server_keys, tmp_path)

    # 1. no forecast yet: the weather bundle does not run, its twin serves and says why
    results = _by_name(fc.run_once(T0_NS))
    assert "cnn-96-weather" not in results
    assert results["cnn-96"].fallback.startswith("cnn-96-weather: no temperature forecast received")
    day = wait_for(lambda: (m := pub.messages.get("he-test/forecast/cnn/96")) and m["fallback_reason"] and m)
    assert day["name"] == "cnn-96" and "served without the temperature" in day["fallback_reason"]
    assert agent.health.get("weather_unavailable") >= 1

    # 2. a bad payload is counted and changes nothing; a Home Assistant forecast arrives retained
    pub.c.publish("he-test/weather/forecast", b"{not json", qos=1).wait_for_publish(5)
    wait_for(lambda: agent.health.get("weather_invalid") >= 1)
    # deep JSON (RecursionError, not ValueError) used to leave unhandled: it cost the listener, not one message
    pub.c.publish("he-test/weather/forecast", b"[" * 100_000, qos=1).wait_for_publish(5)
    wait_for(lambda: agent.health.get("weather_invalid") >= 2)
    pub.c.publish("he-test/weather/forecast", ha_forecast(temp, T0_NS - HOUR_NS).encode(), qos=1,
                  retain=True).wait_for_publish(5)
    wait_for(lambda: fc.weather.latest is not None)
    results = _by_name(fc.run_once(T0_NS))
    w = results["cnn-96-weather"]
    assert w.temperature.startswith("mqtt forecast issued 2023-07-04T23:00:00Z") and "measured sensor" in w.temperature
    assert results["cnn-96"].fallback == ""  # both ran: nothing stood in for anything
    # the temperature it was given: measured slots (+0.3 °C, interpolated) before T0, the forecast (−0.5 °C) after
    series, _ = fc.weather.known_at(T0_NS)
    assert series.values[series.index_of(T0_NS)] == pytest.approx(temp.values[temp.index_of(T0_NS)] + 0.3, abs=1e-6)
    assert series.values[series.index_of(T0_NS) + 4] == pytest.approx(temp.values[temp.index_of(T0_NS + HOUR_NS)] - 0.5)
    model = fc.active.loaded()["cnn-96-weather"]
    np.testing.assert_allclose(w.values, model.predict(fc.read_series(T0_NS), T0_NS, temperature=series).values)
    assert not np.allclose(w.values, model.predict(fc.read_series(T0_NS), T0_NS,
                                                   temperature=SlotSeries(series.start_ns, series.values + 15)).values)
    day = wait_for(lambda: (m := pub.messages.get("he-test/forecast/cnn/96")) and m["name"] == "cnn-96-weather" and m)
    assert day["temperature_source"] == w.temperature and day["fallback_reason"] is None
    best = wait_for(lambda: (m := pub.messages.get("he-test/forecast/best/96")) and m["name"] == "cnn-96-weather" and m)
    assert best["total_kwh"] == pytest.approx(float(np.sum(w.values)), abs=0.01)
    rows = influxd_session.query("SELECT count(value_kwh) FROM forecast WHERE issue = 'day_ahead' GROUP BY \"name\"",
                                 db=influx_db_name)["results"][0]["series"]
    assert {s["tags"]["name"]: s["values"][0][1] for s in rows} == {"cnn-96": 96, "cnn-96-weather": 96}
    src = influxd_session.query("SELECT temperature_source FROM forecast WHERE \"name\" = 'cnn-96-weather' LIMIT 1",
                                db=influx_db_name)["results"][0]["series"][0]["values"][0][1]
    assert src == w.temperature
    # the record of what the slots' temperature was, for a restart and the server's trainings
    rec = influxd_session.query("SELECT count(temperature_c) FROM weather_slots", db=influx_db_name)["results"][0]
    assert rec["series"][0]["values"][0][1] >= 8 * 96  # the measured days (written for 9 days before T0)

    # 3. a day later the day-ahead forecasts of both are scored; the forecast (issued 25 h before) is stale now
    clock.set(T0 + timedelta(days=1))
    results = _by_name(fc.run_once(T0_NS + 24 * HOUR_NS))
    assert "cnn-96-weather" not in results
    assert "temperature forecast stale" in results["cnn-96"].fallback
    skill = influxd_session.query("SELECT count(error_kwh) FROM forecast_skill WHERE \"window\" = 'slot' AND "
                                  "horizon = '96' GROUP BY \"name\"", db=influx_db_name)["results"][0]["series"]
    scored = {s["tags"]["name"]: s["values"][0][1] for s in skill}
    assert scored["cnn-96"] == scored["cnn-96-weather"] > 90

    # 4. a restart reads the record back (no measured reading needed for the past days)
    agents.stop(agent)
    agent = agents.start()
    fc = agent.components["forecast"]
    pub.c.publish("he-test/weather/forecast", ha_forecast(temp, T0_NS + 23 * HOUR_NS).encode(), qos=1,
                  retain=True).wait_for_publish(5)
    wait_for(lambda: fc.weather.latest is not None and fc.weather.latest.issued_ns == T0_NS + 23 * HOUR_NS)
    assert "cnn-96-weather" in _by_name(fc.run_once(T0_NS + 24 * HOUR_NS))
    status = AgentClient(agent.components["api"].url, TOKEN).status()
    assert status["calendar"]["weather"]["forecast"]["source"] == "mqtt"


class OpenMeteo(BaseHTTPRequestHandler):
    """Answers like api.open-meteo.com/v1/forecast (hourly temperature_2m, unix times) and keeps the queries."""

    queries: list[dict] = []
    temp: SlotSeries | None = None
    now_ns = T0_NS

    def do_GET(self):  # noqa: N802
        q = parse_qs(urlsplit(self.path).query)
        OpenMeteo.queries.append(q)
        start = self.now_ns - 7 * 24 * HOUR_NS
        times = [start + h * HOUR_NS for h in range(10 * 24)]
        body = json.dumps({"latitude": 47.4, "hourly_units": {"temperature_2m": "°C"},
                           "hourly": {"time": [t // 10**9 for t in times],
                                      "temperature_2m": [round(float(self.temp.values[self.temp.index_of(t)]), 1)
                                                         for t in times]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_open_meteo_from_a_local_server_fills_the_past_and_the_forecast(tmp_path, mosquitto_session, influxd_session,
                                                                         influx_db_name, server_keys, weather_bundles):
    load_meter(influxd_session, influx_db_name, T0 + timedelta(hours=1), days=10)
    OpenMeteo.temp, OpenMeteo.queries = real_temperature(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), OpenMeteo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        extra = f"""
[weather]
open_meteo = true
latitude = 47.37
longitude = 8.54
open_meteo_url = "http://127.0.0.1:{server.server_address[1]}/v1/forecast"
"""
        cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys,
                           forecast_extra=extra)
        agents = Agents(cfg, clock=Clock(T0))
        agent = agents.start()
        try:
            fc = agent.components["forecast"]
            wait_for(lambda: fc.weather.latest is not None)
            q = OpenMeteo.queries[0]
            assert q["latitude"] == ["47.37"] and q["hourly"] == ["temperature_2m"] and q["timeformat"] == ["unixtime"]
            _push(agent, weather_bundles, server_keys, tmp_path)
            w = _by_name(fc.run_once(T0_NS))["cnn-96-weather"]
            assert w.temperature.startswith("open-meteo forecast issued")  # no sensor: its past days stand in
        finally:
            agents.stop_all()
    finally:
        server.shutdown()


def test_forecast_payload_shapes():
    t = "2023-07-05T00:00:00+02:00"
    hourly = [{"datetime": f"2023-07-05T{h:02d}:00:00+00:00", "temperature": float(h)} for h in range(6)]
    f = parse_forecast(json.dumps({"weather.home": {"forecast": hourly}}), "UTC", T0_NS)
    assert f.issued_ns == T0_NS and f.slots[T0_NS + SLOT_NS] == pytest.approx(0.125)  # middle of the slot: 7.5 min
    assert parse_forecast(json.dumps(hourly), "UTC", T0_NS).slots == f.slots
    daily = [{"datetime": t, "temperature": 24.0, "templow": 14.0},
             {"datetime": "2023-07-06T00:00:00+02:00", "temperature": 20.0}]
    d = parse_forecast(json.dumps({"forecast": daily, "issued_at": "2023-07-04T18:00:00Z"}), "Europe/Zurich", T0_NS)
    # 2023-07-05 local (Zurich) runs from 2023-07-04T22:00Z to 2023-07-05T22:00Z
    assert d.slots[parse_time_ns("2023-07-04T22:15:00Z")] == 19.0 and d.slots[parse_time_ns("2023-07-05T22:00:00Z")] == 19.0
    assert d.slots[parse_time_ns("2023-07-05T22:15:00Z")] == 20.0
    assert wx.local_day(np.array([parse_time_ns("2023-07-04T22:15:00Z")]), "Europe/Zurich")[0] == \
        parse_time_ns("2023-07-05T00:00:00Z") // (24 * HOUR_NS)
    for bad, why in (("{", "not JSON"), ("[]", "non-empty"), ('[{"datetime": "x", "temperature": 1}]', "RFC 3339"),
                     ('[{"datetime": "2023-07-05T00:00:00Z", "temperature": "warm"}]', "temperature"),
                     ('[{"datetime": "2023-07-05T00:00:00Z"}]', "needs a temperature")):
        with pytest.raises(ValueError, match=why):
            parse_forecast(bad, "UTC", T0_NS)


@pytest.mark.parametrize("section, error", [
    ("open_meteo = true", "needs latitude"),
    ("open_meteo = true\nlatitude = 47.0\nlongitude = 8.0\nopen_meteo_url = \"ftp://x\"", "http"),
    ("timezone = \"Mars/Base\"", "timezone"),
    ("max_age_h = 0", "max_age_h"),
    ("forecast_topc = \"x\"", "unknown key"),
])
def test_weather_config_errors_name_the_key(tmp_path, section, error):
    from edge_agent.config import ConfigError, load_config
    from edge_agent.forecast.component import parse_config
    from tests.helpers.agent import write_config

    cfg = load_config(write_config(tmp_path, 1883, "http://127.0.0.1:8086", "energy",
                                   extra=f"[forecast]\n[weather]\n{section}\n"))
    with pytest.raises(ConfigError, match=error):
        parse_config(cfg)
