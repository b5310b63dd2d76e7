"""The example house of docs/devices.md (edge_agent/examples/house.toml): a valid configuration, rules that are the
shipped family rules, and an energy flow that comes out right from what its devices send.

grid = a Tasmota SML reader's import/export counters, PV = OpenDTU's yield counter, battery = Victron's DC power;
the house is derived. The devices' messages go through the house's own rules (the agent's converter, with the
receive times a real broker would give them) into the real influxd; the flow component of an agent built from
the house's configuration then computes the slots.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.ingest.convert import Converter
from edge_agent.ingest.rules import Router, load_rules
from shared.storage import open_storage
from tests.helpers.agent import ROOT, wait_for

EXAMPLES = ROOT / "edge_agent" / "examples"
HOUSE = EXAMPLES / "house.toml"
T0 = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)
PORTAL, INVERTER = "c0619ab1cafe", "116183771004"


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int = 1


def test_house_config_passes_check_offline():
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--offline", "--config", str(HOUSE)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "config OK: 5 rule(s)" in r.stdout


def test_house_rules_are_the_shipped_family_rules():
    """The house copies its rules from the family files: they must not drift apart."""
    shipped = {}
    for path in EXAMPLES.glob("devices-*.toml"):
        for rule in tomllib.loads(path.read_text())["rules"]:
            shipped[rule["name"]] = rule
    house = tomllib.loads(HOUSE.read_text())
    assert [r["name"] for r in house["rules"]] == ["tasmota", "opendtu-ac", "victron-battery", "zigbee2mqtt-plugs",
                                                    "shelly-gen2-status"]
    for rule in house["rules"]:
        assert rule == shipped[rule["name"]], rule["name"]


def _messages() -> list[tuple[int, str, bytes]]:
    """(receive time ns, topic, payload) of one hour and a bit: grid +0.5 kWh import and +0.1 kWh export per 15
    minutes, PV +0.3 kWh, the battery charging at 400 W (0.1 kWh); so the house uses 0.6 kWh per slot."""
    out = []
    berlin = ZoneInfo("Europe/Berlin")
    for minute in range(0, 76, 5):
        t = T0 + timedelta(minutes=minute)
        ns = int(t.timestamp()) * 10**9
        k = minute / 15
        local = t.astimezone(berlin).replace(tzinfo=None).isoformat()  # Tasmota's Time: local, no offset
        sml = {"Time": local, "SML": {"Total_in": round(12345.0 + 0.5 * k, 6), "Total_out": round(2345.0 + 0.1 * k, 6),
                                      "Power_curr": 1600}}
        out.append((ns + 10**9, "tele/stromzaehler/SENSOR", json.dumps(sml).encode()))
        out.append((ns, f"solar/{INVERTER}/0/yieldtotal", f"{1000.0 + 0.3 * k:.6f}".encode()))
        out.append((ns, f"solar/{INVERTER}/0/power", b"1200"))
    for minute in range(0, 77):
        ns = int((T0 + timedelta(minutes=minute)).timestamp()) * 10**9
        out.append((ns, f"N/{PORTAL}/battery/512/Dc/0/Power", json.dumps({"value": 400.0}).encode()))
        out.append((ns, f"N/{PORTAL}/battery/512/Soc", json.dumps({"value": 50 + minute / 10}).encode()))
    # plugs: stored for the dashboards, not part of the flow
    out.append((int(T0.timestamp()) * 10**9, "zigbee2mqtt/plug/washing_machine",
                json.dumps({"state": "ON", "power": 41.7, "energy": 12.34, "linkquality": 156}).encode()))
    return out


def test_house_energy_flow_from_its_devices(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    doc = tomllib.loads(HOUSE.read_text())
    doc["agent"] = {"state_dir": str(tmp_path / "state")}
    doc["mqtt"].update(port=mosquitto_session.port, client_id=f"agent-{influx_db_name}"[:60])
    doc["storage"].update(url=influxd_session.url, database=influx_db_name)
    doc["flow"].update(delay_s=0, lookback_slots=5, late_debounce_s=0.2, publish=False)
    doc["publish"]["discovery"] = False
    del doc["forecast"]
    path = tmp_path / "house.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)

    router = Router(load_rules(cfg))
    converter = Converter(router, cfg.ingest.max_payload_bytes)
    storage = open_storage(cfg.storage)
    body = b""
    for ns, topic, payload in _messages():
        out = converter.convert([Msg(topic, payload)], received_ns=ns)
        assert not out.rejects, out.rejects
        body += out.body
    storage.write_lines(body)
    storage.close()

    agent = Agent(cfg, clock=lambda: T0 + timedelta(minutes=76), components=("flow",))
    agent.start()
    try:
        ends = [int((T0 + timedelta(minutes=15 * k)).timestamp()) * 10**9 for k in range(1, 5)]

        def slots():
            res = influxd_session.query("SELECT * FROM energy_flow", db=influx_db_name)["results"][0]
            if "series" not in res:
                return None
            s = res["series"][0]
            got = {v[0]: dict(zip(s["columns"], v, strict=True)) for v in s["values"]}
            return got if all(t in got and got[t].get("house") is not None for t in ends) else None

        got = wait_for(slots, timeout=30)
        for t in ends:
            row = got[t]
            assert row["flags"] == "", row
            assert row["grid_import"] == pytest.approx(0.5, abs=1e-6)
            assert row["grid_export"] == pytest.approx(0.1, abs=1e-6)
            assert row["pv"] == pytest.approx(0.3, abs=1e-6)
            assert row["battery_charge"] == pytest.approx(0.1, abs=1e-6)
            assert row["battery_discharge"] == pytest.approx(0.0, abs=1e-6)
            assert row["house"] == pytest.approx(0.6, abs=1e-6)
    finally:
        agent.stop()
