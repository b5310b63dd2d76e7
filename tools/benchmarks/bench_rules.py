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
from edge_agent.ingest.rules import Router, load_rules

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
    "csv emonhub (12 columns)": ("emonhub/rx/8/values", "252,0,18,0,241.95,18.6,300,300,300,300,300,1234"),
    "key_value marstek b2500 (fields, 1 conversion)": (
        "hame_energy/HMA-1/device/60323bd14b6e/ctrl",
        "p1=1,p2=1,w1=233,w2=0,pe=78,vv=224,sv=9,cs=0,cd=0,am=0,o1=1,o2=1,do=90,lv=800,cj=1,kn=1800,g1=110,g2=108,"
        "b1=0,b2=0,md=0,d1=1,e1=0:0,f1=23:59,h1=800,sg=0,sp=80,st=0,tl=12,th=13,tc=0,tf=0,fc=202310231502"),
    "json zigbee2mqtt meter (sign)": (
        "zigbee2mqtt/meter/grid",
        {"ac_frequency": 50, "current_a": 0.57, "energy_a": 1523.45, "energy_flow_a": "producing",
         "energy_flow_b": "consuming", "energy_produced_a": 2456.78, "linkquality": 120, "power_a": 130.8,
         "power_b": 455.2, "voltage": 231.4}),
    "json grott (11 fields x 0.1, exact)": (
        "energy/growatt",
        {"device": "NTCXXXXXXX", "time": "2024-03-01T12:00:00", "buffered": "no",
         "values": {"pvstatus": 1, "pvpowerin": 27950, "pv1voltage": 3621, "pv1current": 40, "pv1watt": 14480,
                    "pv2voltage": 3400, "pv2current": 39, "pv2watt": 13470, "pvpowerout": 26833,
                    "pvfrequentie": 4998, "pvgridvoltage": 2331, "pvenergytoday": 53, "pvenergytotal": 118316,
                    "pvtemperature": 391}}),
    "tasmota linky (numeric strings, Wh->kWh)": (
        "tele/linky/SENSOR",
        {"Time": "2024-03-01T12:00:00", "ENERGY": {"Total": 7970.903, "Power": 270},
         "TIC": {"ADCO": "031762120162", "OPTARIF": "BASE", "ISOUSC": "30", "BASE": "007970903", "PTEC": "TH..",
                 "IINST": "001", "IMAX": "090", "PAPP": "00270", "HHPHC": "A", "MOTDETAT": "000000"}}),
    "shelly_gen2 emdata (12 Wh->kWh)": (
        "shellypro3em-c8f09e8a1b2c/status/emdata:0",
        {"id": 0, "a_total_act_energy": 10000.5, "a_total_act_ret_energy": 5.5, "b_total_act_energy": 2000.0,
         "b_total_act_ret_energy": 0.0, "c_total_act_energy": 119881.35, "c_total_act_ret_energy": 0.0,
         "total_act": 131881.85, "total_act_ret": 5.5}),
}


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int = 1


def converter() -> Converter:
    rules = SEED + Z2M_ALL + "".join((EXAMPLES / f"devices-{f}.toml").read_text()
                                     for f in ("zigbee2mqtt", "dsmr-reader", "victron", "tasmota", "opendtu",
                                               "emonhub", "marstek", "growatt-grott", "shelly-gen2"))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "agent.toml"
        cfg.write_text(f'[agent]\nstate_dir = "{tmp}"\n{rules}')
        config = load_config(cfg)
    return Converter(Router(load_rules(config)), config.ingest.max_payload_bytes)


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
