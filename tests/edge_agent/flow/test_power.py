"""Power now for Home Assistant (edge_agent/flow/power.py): from the stored lines, per role, through MQTT."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.flow.component import FlowDevice
from edge_agent.flow.power import PowerNow
from tests.helpers.agent import wait_for, write_config
from tests.helpers.forecast import Retained
from tools.publish import Publisher, seed_message

S = 10**9


def test_newest_power_per_role_from_line_protocol():
    devices = [FlowDevice("grid", "EnergyMeter", {"device_id": "meter 1"}, import_field="EnergyIn", power_field="Power"),
               FlowDevice("pv", "PvString", {"device_id": "p1"}, import_field="EnergyOut", power_field="P,ac"),
               FlowDevice("pv", "PvString", {"device_id": "p2"}, import_field="EnergyOut", power_field="P,ac"),
               FlowDevice("battery", "Battery", {"device_id": "b"}, import_field="EnergyIn")]  # no power: no house
    p = PowerNow(devices, interval_s=0)
    assert p.sensor_roles() == {"grid", "pv"}
    lines = [b'EnergyMeter,device_id=meter\\ 1,device_name=x EnergyIn=5.0,Power=-812.5 100000000000\n',
             b'EnergyMeter,device_id=meter\\ 1 Power=-700i 90000000000\n',  # older: ignored
             b'PvString,device_id=p1,device_type=pv EnergyOut=1.0,P\\,ac=1000 100000000000\n',
             b'PvString,device_id=p3 P\\,ac=5 100000000000\n',  # not a flow device
             b'PvStringX,device_id=p2 P\\,ac=5 100000000000\n',  # another measurement
             b'agent,host=x received=5i 100000000000\n']
    assert p.update(lines)
    assert p.payload() == {"time": "1970-01-01T00:01:40Z", "grid_w": -812.5, "pv_w": None, "battery_w": None,
                           "house_w": None}  # p2 has not reported: the PV's power is unknown
    assert p.update([b'PvString,device_id=p2 P\\,ac=400i 110000000000\n'])
    assert p.payload()["pv_w"] == 1400.0
    # a device silent for more than five minutes while the others report no longer counts as now
    assert p.update([b'EnergyMeter,device_id=meter\\ 1 Power=10 500000000000\n'])
    assert p.payload()["grid_w"] == 10.0 and p.payload()["pv_w"] is None


def test_power_reaches_home_assistant(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    prefix = f"pw-{influx_db_name[-12:]}"
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}", extra=f"""
[publish]
topic_prefix = "{prefix}"
node_id = "pwnode"
[flow]
power_interval_s = 0
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = {{ device_id = "g" }}
import_field = "EnergyIn"
power_field = "Power"
[[flow.devices]]
role = "pv"
measurement = "PvString"
tags = {{ device_id = "p" }}
import_field = "EnergyOut"
power_field = "Power"
""")
    ha = Retained(mosquitto_session.port, f"{prefix}/flow/power")
    disc = Retained(mosquitto_session.port, "homeassistant/device/pwnode/config")
    agent = Agent(load_config(cfg), components=("flow",))
    agent.start()
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        assert agent.ingest.connected.wait(10)
        t = datetime.now(UTC).replace(microsecond=0)
        pub.publish_all([seed_message("g", "c", "EnergyMeter", t, {"EnergyIn": 5.0, "Power": 350.0}),
                         seed_message("p", "c", "PvString", t + timedelta(seconds=1), {"EnergyOut": 2.0,
                                                                                       "Power": 1200.0})])
        doc = wait_for(lambda: (d := ha.messages.get(f"{prefix}/flow/power")) and d.get("pv_w") and d, timeout=20)
        assert (doc["grid_w"], doc["pv_w"], doc["house_w"]) == (350.0, 1200.0, 1550.0)
        cmps = wait_for(lambda: disc.messages.get("homeassistant/device/pwnode/config"))["cmps"]
        assert {k for k in ("grid_power", "pv_power", "battery_power", "house_power") if len(cmps[k]) > 1} == {
            "grid_power", "pv_power", "house_power"}
    finally:
        pub.close()
        ha.close()
        disc.close()
        agent.stop()
