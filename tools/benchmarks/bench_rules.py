"""`python -m tools.benchmarks.bench_rules`: CPU per message of each payload format, in the agent's converter.

What `make bench-ingest` measures end to end (MQTT, spool, InfluxDB) minus the I/O: message → rule → points →
line protocol, for typical payloads of the shipped device families. The last line printed is one JSON object:
CPU µs per message per case (best of several rounds of N messages, converted in groups of 100 like the
spooler).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.ingest.convert import Converter
from edge_agent.ingest.rules import Router, compile_rules

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "edge_agent" / "examples"

SEED = """
[[rules]]
name = "hackathon"
topic = "hack/+device/+channel"
format = "seed_json"
"""

Z2M_ALL = """
[[rules]]
name = "z2m-all"
topic = "z2mall/+device"
format = "json"
include = ["*"]
exclude = ["linkquality", "update.*"]
"""

CASES = {
    "seed_json": ("hack/meter-1/energy", {"FeatureType": "EnergyMeter", "device_id": "meter-1",
                                          "device_name": "Hausanschluss", "device_type": "grid_meter",
                                          "time": "2023-01-01T00:15:00Z", "Power": 812.5, "EnergyIn": 4447.92}),
    "json zigbee2mqtt (fields by path, map)": (
        "zigbee2mqtt/plug/washer",
        {"child_lock": "UNLOCK", "current": 0.18, "energy": 12.34, "indicator_mode": "off/on", "linkquality": 156,
         "power": 41.7, "power_outage_memory": "restore", "state": "ON", "voltage": 231,
         "update": {"installed_version": 192, "latest_version": 192, "state": "idle"}}),
    "json zigbee2mqtt (include/exclude globs)": (
        "z2mall/washer",
        {"child_lock": "UNLOCK", "current": 0.18, "energy": 12.34, "indicator_mode": "off/on", "linkquality": 156,
         "power": 41.7, "power_outage_memory": "restore", "state": "ON", "voltage": 231,
         "update": {"installed_version": 192, "latest_version": 192, "state": "idle"}}),
    "json dsmr-reader (numeric strings, time)": (
        "dsmr/json", {"id": 51, "timestamp": "2024-03-01T11:00:00Z", "electricity_delivered_1": "1234.567",
                      "electricity_returned_1": "10.123", "electricity_delivered_2": "2345.678",
                      "electricity_returned_2": "543.210", "electricity_currently_delivered": "0.412",
                      "electricity_currently_returned": "0.000", "phase_currently_delivered_l1": "0.212",
                      "extra_device_timestamp": "2024-03-01T10:55:00Z", "extra_device_delivered": "3456.789"}),
    "json victron (value lists, {value})": ("N/c0619ab1cafe/battery/512/Dc/0/Power", {"value": -1250.4}),
    "tasmota SML": ("tele/stromzaehler/SENSOR", {"Time": "2024-03-01T12:00:00",
                                                 "SML": {"Total_in": 12345.678, "Total_out": 2345.678,
                                                         "Power_curr": -512}}),
    "number opendtu": ("solar/116183771004/0/yieldtotal", "1234.567"),
}


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int = 1


def converter() -> Converter:
    rules = SEED + Z2M_ALL + "".join((EXAMPLES / f"devices-{f}.toml").read_text()
                                     for f in ("zigbee2mqtt", "dsmr-reader", "victron", "tasmota", "opendtu"))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "agent.toml"
        cfg.write_text(f'[agent]\nstate_dir = "{tmp}"\n{rules}')
        config = load_config(cfg)
    return Converter(Router(compile_rules(config.rules)), config.ingest.max_payload_bytes)


def measure(conv: Converter, topic: str, payload: bytes, n: int, rounds: int) -> float:
    group = [Msg(topic, payload)] * 100
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()  # CPU time: steadier than wall time on a shared machine
        for _ in range(n // 100):
            out = conv.convert(group, received_ns=1_700_000_000_000_000_000)
        best = min(best, (time.process_time() - start) / (n // 100 * 100))
        assert out.points and not out.rejects, out.rejects[:1]
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    conv = converter()
    result = {}
    for name, (topic, doc) in CASES.items():
        payload = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
        result[name] = round(measure(conv, topic, payload, args.messages, args.rounds), 2)
        print(f"{name:45} {result[name]:7.2f} µs/msg", flush=True)
    print(json.dumps({"us_per_msg": result}))


if __name__ == "__main__":
    main()
