"""Topic layouts that worked but were not written down, and a grid meter that sends a direction feeding the flow:
through the real broker and the real influxd (docs/devices.md, "Topic layouts" and "A grid meter that sends a
direction")."""

from __future__ import annotations

import json
import time
import tomllib
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.ingest.convert import Converter
from edge_agent.ingest.rules import Router, load_rules
from shared.storage import open_storage
from tests.edge_agent.ingest.test_devices import EXAMPLES, rows
from tests.helpers.agent import start_agent, wait_for
from tools.publish import Publisher

LAYOUTS = """
# a device configured with a leading "/" in its topic (MQTT keeps the empty first level)
[[rules]]
name = "leading-slash"
topic = "/home/+room/power"
format = "number"
measurement = "room"
field = "power"

# spaces are allowed in topics (Home Assistant / Node-RED names); the tag keeps them
[[rules]]
name = "spaces"
topic = "home/+room/meter reading"
format = "number"
measurement = "room"
field = "energy"

# Tasmota with FullTopic %topic%/%prefix%/ instead of the default %prefix%/%topic%/
[[rules]]
name = "tasmota-fulltopic"
topic = "+device/tele/SENSOR"
format = "tasmota"
timezone = "Europe/Berlin"

# a Shelly gen2 device whose MQTT topic prefix has several levels: one pattern level each
[[rules]]
name = "shelly-prefix"
topic = "home/+area/+device/status/+component=em:0|emdata:0"
format = "shelly_gen2"
convert = { total_act = "Wh->kWh" }

[[rules]]
name = "shelly-prefix-events"
topic = "home/+area/+device/events/rpc"
format = "shelly_gen2"
"""


def _config(tmp_path, port: int, url: str, db: str, rules: str):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""[agent]
state_dir = "{tmp_path / 'state'}"
[mqtt]
port = {port}
client_id = "agent-{db}"
reconnect_max_s = 2
[storage]
url = "{url}"
database = "{db}"
[spool]
batch_interval_s = 0.2
[health]
interval_s = 3600
{rules}""")
    return cfg


def test_topic_layouts_end_to_end(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    agent = start_agent(_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, LAYOUTS))
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}"[:60])
    try:
        notify = {"src": "shellypro3em-c8f09e8a1b2c", "dst": "shellypro3em-c8f09e8a1b2c/events",
                  "method": "NotifyStatus", "params": {"ts": 1709294400.5, "em:0": {"id": 0, "total_act_power": 5.5}}}
        pub.publish_all([
            ("/home/living room/power", b"41.5"), ("home/cellar/meter reading", b"1234.5"),
            ("stromzaehler/tele/SENSOR", json.dumps({"Time": "2024-03-01T12:00:00",
                                                     "SML": {"Total_in": 12345.678, "Power_curr": -512}}).encode()),
            ("home/garage/shellypro3em-c8f09e8a1b2c/status/emdata:0", json.dumps({"id": 0, "total_act": 131881.85,
                                                                                  "total_act_ret": 5.5}).encode()),
            ("home/garage/shellypro3em-c8f09e8a1b2c/events/rpc", json.dumps(notify).encode()),
            # not under the layouts: never subscribed
            ("home/living room/power", b"1"), ("tele/stromzaehler/SENSOR", b'{"SML": {"Total_in": 1}}')])

        def got():
            out = {m: rows(influxd_session, influx_db_name, m) for m in ("room", "tasmota", "shelly")}
            return out if all(out.values()) and len(out["room"]) == 2 and len(out["shelly"]) == 2 else None

        out = wait_for(got, timeout=20)
        room = {r["room"]: r for r in out["room"]}
        assert room["living room"]["power"] == 41.5 and room["cellar"]["energy"] == 1234.5
        [sml] = out["tasmota"]
        assert (sml["device"], sml["sensor"], sml["Total_in"], sml["time"]) == (
            "stromzaehler", "SML", 12345.678, 1709290800 * 10**9)
        shelly = {r["component"]: r for r in out["shelly"]}
        assert shelly["emdata:0"]["area"] == "garage" and shelly["emdata:0"]["total_act"] == 131.88185
        assert shelly["em:0"]["device"] == "shellypro3em-c8f09e8a1b2c"
        assert shelly["em:0"]["time"] == 1709294400_500_000_000
        time.sleep(0.5)
        assert agent.health.get("received") == 5 and agent.health.get("rejected") == 0
    finally:
        pub.close()
        agent.stop()


T0 = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)


def test_a_signed_grid_power_from_a_direction_feeds_the_flow(tmp_path, influxd_session, influx_db_name):
    """A PJ-1203A clamp on the grid sends |power| and "consuming"/"producing": with the shipped rule's `sign` the
    flow's power input gets + import / − export. 2 kW consumed in the first slot, 0.4 kW produced in the second
    (PV 2 kW throughout): import 0.5 / export 0 kWh, then 0 / 0.1 kWh; the house 1.0 then 0.4 kWh."""
    rules = tomllib.loads((EXAMPLES / "devices-zigbee2mqtt.toml").read_text())["rules"]
    doc = {"agent": {"state_dir": str(tmp_path / "state")},
           "storage": {"url": influxd_session.url, "database": influx_db_name},
           "rules": rules + tomllib.loads((EXAMPLES / "devices-opendtu.toml").read_text())["rules"],
           "flow": {"delay_s": 0, "lookback_slots": 4, "late_debounce_s": 0.2, "publish": False, "devices": [
               {"role": "grid", "measurement": "zigbee_meter", "tags": {"device": "grid"}, "input": "power",
                "power_field": "power_a"},
               {"role": "pv", "measurement": "opendtu", "tags": {"inverter": "1", "channel": "0"},
                "import_field": "yieldtotal"}]}}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    router = Router(load_rules(cfg))
    converter = Converter(router, cfg.ingest.max_payload_bytes)
    body = b""
    for minute in range(0, 31):
        ns = int((T0 + timedelta(minutes=minute)).timestamp()) * 10**9
        meter = {"power_a": 2000.0 if minute < 15 else 400.0,
                 "energy_flow_a": "consuming" if minute < 15 else "producing", "voltage": 231.4}
        for topic, payload in (("zigbee2mqtt/meter/grid", json.dumps(meter).encode()),
                               ("solar/1/0/yieldtotal", f"{1000 + minute * 2 / 60:.6f}".encode())):
            out = converter.convert([type("M", (), {"topic": topic, "payload": payload, "qos": 1})()],
                                    received_ns=ns)
            assert not out.rejects, out.rejects
            body += out.body
    storage = open_storage(cfg.storage)
    storage.write_lines(body)
    storage.close()

    agent = Agent(cfg, clock=lambda: T0 + timedelta(minutes=31), components=("flow",))
    agent.start()
    try:
        ends = [int((T0 + timedelta(minutes=15 * k)).timestamp()) * 10**9 for k in (1, 2)]

        def slots():
            res = influxd_session.query("SELECT * FROM energy_flow", db=influx_db_name)["results"][0]
            if "series" not in res:
                return None
            s = res["series"][0]
            got = {v[0]: dict(zip(s["columns"], v, strict=True)) for v in s["values"]}
            return got if all(t in got and got[t].get("house") is not None for t in ends) else None

        got = wait_for(slots, timeout=30)
        first, second = got[ends[0]], got[ends[1]]
        assert (first["grid_import"], first["grid_export"]) == (pytest.approx(0.5, abs=1e-3), pytest.approx(0))
        assert (second["grid_import"], second["grid_export"]) == (pytest.approx(0, abs=1e-3),
                                                                  pytest.approx(0.1, abs=1e-3))
        assert first["house"] == pytest.approx(1.0, abs=1e-3) and second["house"] == pytest.approx(0.4, abs=1e-3)
    finally:
        agent.stop()
