"""`make bench-flow`: the energy flow and the forecasts in real time, as a house runs them.

Two agents run side by side on the same broker and messages (one run, so the ratio is fair): one with ingest
only, one with ingest + flow + forecast + model API (quick-trained int8 bundles pushed). A grid meter, a PV
inverter and a battery (tools/scenario.py: a PV + battery house around the real seed consumption) first
send 9 days of history, then report live at `--rate` messages per second in total, at their own, unaligned
times (every reading is stamped with the wall clock). The run lasts until `--boundaries` slot boundaries have
passed (plus the forecast's delay), on the real clock: 15-30 minutes.

The last line printed is one JSON object: slots written on time (first seen within the flow's delay + 15 s of
their boundary), forecast points written by models and by baselines per cycle, the agents' CPU (% of one core)
and how much the flow adds, RSS at the start and the end of the live period, and the flow's house values against
the simulation. Targets (issue 18): every slot on time, every cycle's forecasts from the models, flow ≤ 2 % of a
core at 200 msg/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.schema import SLOT_NS
from tools import scenario
from tools.benchmarks.bench_ingest import cpu_seconds, rss_mb
from tools.publish import Publisher, seed_message
from tools.services import Influxd, Mosquitto, free_port, spawn_agent, wait_for_api

ROOT = Path(__file__).resolve().parents[2]

CSV = ROOT / "data" / "seed_house" / "raw_data.csv"
SEED_START = datetime(2023, 6, 20, tzinfo=UTC)  # summer: the PV and the battery have work to do
FLOW_DELAY_S, FORECAST_DELAY_S = 30, 60
TOKEN = "bench-flow-token-0123456789"


def say(msg: str) -> None:
    print(f"[bench-flow] {msg}", file=sys.stderr, flush=True)


def config(tmp: Path, name: str, broker: int, influx: str, full: bool, api_port: int, public_key: str) -> Path:
    text = f"""[agent]
state_dir = "{tmp / name}"
[mqtt]
port = {broker}
client_id = "bench-{name}"
subscribe = ["hack/#"]
[storage]
url = "{influx}"
database = "{name}"
[health]
interval_s = 60
[logging]
file = "agent.log"
[publish]
topic_prefix = "bench-{name}"
node_id = "bench_{name}"
[[rules]]
topic = "hack/+device/+channel"
format = "seed_json"
"""
    if full:
        text += scenario.FLOW_CONFIG.replace("delay_s = 0", f"delay_s = {FLOW_DELAY_S}") \
            .replace("late_debounce_s = 0.5", "late_debounce_s = 2") + f"""
[forecast]
source = "slots"
measurement = "energy_flow"
field = "house"
delay_s = {FORECAST_DELAY_S}
[api]
port = {api_port}
token = "{TOKEN}"
public_key = "{public_key}"
"""
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


class House:
    """The simulated devices' counters at any time: linear within each slot between the slot-end values."""

    def __init__(self, slots: list[dict], shift_ns: int):
        self.t = np.array([int(s["time"].timestamp() * 1e9) + shift_ns for s in slots], dtype=np.int64)
        self.slots = slots
        self.c = {k: np.array([s[k] for s in slots]) for k in ("c_imp", "c_exp", "c_pv", "c_chg", "c_dis")}

    def at(self, t_ns: int) -> dict[str, float]:
        return {k: float(np.interp(t_ns, self.t, v)) for k, v in self.c.items()}

    def messages(self, t_ns: int, device: int) -> tuple[str, bytes]:
        c = self.at(t_ns)
        when = datetime.fromtimestamp(t_ns / 1e9, UTC)
        if device == 0:
            return seed_message("house-grid", "meter", "EnergyMeter", when,
                                {"EnergyIn": round(c["c_imp"], 6), "EnergyOut": round(c["c_exp"], 6)})
        if device == 1:
            return seed_message("pv-roof", "string1", "PvString", when, {"EnergyOut": round(c["c_pv"], 6)})
        return seed_message("battery-1", "state", "Battery", when,
                            {"EnergyIn": round(c["c_chg"], 6), "EnergyOut": round(c["c_dis"], 6)})


def live(house: House, port: int, rate: float, stop: threading.Event, sent: list[int]) -> None:
    pub = Publisher("127.0.0.1", port, client_id="bench-flow-live", max_inflight=500)
    k, t0 = 0, time.monotonic()
    try:
        while not stop.is_set():
            due = t0 + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            topic, payload = house.messages(time.time_ns(), k % 3)
            pub.client.publish(topic, payload, qos=1)
            k += 1
            sent[0] = k
    finally:
        time.sleep(1)
        pub.close()


def query(db: Influxd, name: str, q: str) -> list:
    res = db.query(q, db=name)["results"][0]
    return res.get("series", [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--boundaries", type=int, default=2)
    ap.add_argument("--bundles", type=Path, help="bundle directory (default: a quick training on the real data)")
    args = ap.parse_args()
    from shared import signing
    from shared.agent_client import AgentClient

    tmp = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    procs: list[subprocess.Popen] = []
    try:
        bundles = args.bundles
        if bundles is None:
            say("training quick bundles on the real data …")
            bundles = tmp / "bundles"
            subprocess.run([sys.executable, "-m", "training", "train", "--data", str(CSV), "--until",
                            "2023-06-18T02:00:00Z", "--out", str(bundles), "--quick"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
        keys = signing.generate_keypair()
        with Mosquitto(tmp / "mosquitto") as broker, Influxd(tmp / "influxd") as db:
            for name in ("ingest", "full"):
                db.create_database(name)
            api_port = free_port()
            cfgs = {name: config(tmp, name, broker.port, db.url, name == "full", api_port, keys.public_text)
                    for name in ("ingest", "full")}
            procs += [spawn_agent(cfg) for cfg in cfgs.values()]
            ingest_agent, full_agent = procs
            client = AgentClient(f"http://127.0.0.1:{api_port}", TOKEN)
            wait_for_api(client)
            # history: 9 days through MQTT (the flow computes it as late data), shifted to end now
            now_slot = time.time_ns() // SLOT_NS * SLOT_NS
            slots = scenario.simulate(SEED_START, 10)
            shift = now_slot - 9 * 96 * SLOT_NS - int(SEED_START.timestamp() * 1e9)
            house = House(slots, shift)
            history = [s for s in slots if int(s["time"].timestamp() * 1e9) + shift <= now_slot]
            shifted = [{**s, "time": datetime.fromtimestamp(s["time"].timestamp() + shift / 1e9, UTC)}
                       for s in history]
            pub = Publisher("127.0.0.1", broker.port, client_id="bench-flow-history")
            n_history = pub.publish_all(scenario.messages(shifted))
            pub.close()
            say(f"{n_history} history messages sent; waiting for the flow to compute 9 days")
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                rows = query(db, "full", 'SELECT count("house") FROM "energy_flow"')
                if rows and rows[0]["values"][0][1] >= 9 * 96 - 8:
                    break
                time.sleep(1)
            signed = tmp / "signed"
            for name in ("cnn-1", "lstm-1", "cnn-96", "lstm-96"):
                shutil.copytree(bundles / name, signed / name)
                signing.sign_bundle_dir(signed / name, keys)
                client.push(signed / name)
            say("bundles pushed; live devices start")

            stop, sent = threading.Event(), [0]
            publisher = threading.Thread(target=live, args=(house, broker.port, args.rate, stop, sent), daemon=True)
            cpu0 = {p.pid: cpu_seconds(p.pid) for p in procs}
            rss0 = rss_mb(full_agent.pid)
            wall0 = time.monotonic()
            start_ns = time.time_ns()
            publisher.start()
            first = (start_ns // SLOT_NS + 1) * SLOT_NS
            boundaries = [first + k * SLOT_NS for k in range(args.boundaries)]
            end_ns = boundaries[-1] + (FORECAST_DELAY_S + 45) * 10**9
            seen: dict[int, float] = {}
            say(f"live for {(end_ns - start_ns) / 60e9:.1f} minutes ({args.boundaries} boundaries)")
            while time.time_ns() < end_ns:
                for s in query(db, "full", f'SELECT "house", "flags" FROM "energy_flow" WHERE time >= {first}'):
                    for t, _house, _flags in s["values"]:
                        seen.setdefault(t, time.time())
                time.sleep(2)
            stop.set()
            publisher.join(10)
            wall = time.monotonic() - wall0
            cpu = {p.pid: 100 * (cpu_seconds(p.pid) - cpu0[p.pid]) / wall for p in procs}
            rss1 = rss_mb(full_agent.pid)
            time.sleep(3)
            counts = {name: sum((query(db, name, f'SELECT count("{f}") FROM "{m}"') or [{"values": [[0, 0]]}])[0]
                                ["values"][0][1] for m, f in (("EnergyMeter", "EnergyIn"), ("PvString", "EnergyOut"),
                                                              ("Battery", "EnergyIn")))
                      for name in ("ingest", "full")}

            on_time = {datetime.fromtimestamp(b / 1e9, UTC).strftime("%H:%M"):
                       round(seen[b] - b / 1e9, 1) if b in seen else None for b in boundaries}
            rows = {t: (h, f) for s in query(db, "full", f'SELECT "house", "flags" FROM "energy_flow" WHERE '
                                                      f'time >= {first}') for t, h, f in s["values"]}
            errors = []
            for b in boundaries:
                k = int(np.searchsorted(house.t, b))
                if b in rows and rows[b][0] is not None and k < len(slots) and house.t[k] == b:
                    errors.append(abs(rows[b][0] - slots[k]["house"]))
            by_model: dict[str, int] = {}
            cycles: dict[str, dict] = {}
            for s in query(db, "full", 'SELECT "value_kwh", "issued_at", "fallback", "input_complete" FROM '
                                       '"forecast" WHERE "issue" = \'rolling\' GROUP BY "model", "horizon"'):
                for _t, _v, issued, fb, complete in s["values"]:
                    if issued < datetime.fromtimestamp(first / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"):
                        continue
                    model = s["tags"]["model"]
                    by_model[model] = by_model.get(model, 0) + 1
                    c = cycles.setdefault(issued, {"models": set(), "fallback": set(), "complete": True})
                    c["models"].add(f"{model}-{s['tags']['horizon']}")
                    if fb:
                        c["fallback"].add(fb)
                    c["complete"] &= bool(complete)
            result = {
                "rate_msgs_per_s": args.rate, "live_seconds": round(wall, 1), "messages_live": sent[0],
                "stored": counts, "lost": {k: n_history + sent[0] - v for k, v in counts.items()},
                "slots_due": len(boundaries),
                "slots_on_time": sum(1 for b in boundaries if b in seen and seen[b] - b / 1e9 <= FLOW_DELAY_S + 15),
                "slot_seconds_after_boundary": on_time, "flow_delay_s": FLOW_DELAY_S,
                "house_max_abs_error_kwh": round(max(errors), 6) if errors else None,
                "forecast_points_by_model": by_model,
                "forecast_cycles": {k: {"models": sorted(v["models"]), "fallback": sorted(v["fallback"]),
                                        "input_complete": v["complete"]} for k, v in sorted(cycles.items())},
                "cycles_all_models": sum(1 for v in cycles.values() if not v["fallback"] and
                                         not any(m.startswith("baseline") for m in v["models"])),
                "cpu_pct_ingest_only": round(cpu[ingest_agent.pid], 2), "cpu_pct_flow": round(cpu[full_agent.pid], 2),
                "flow_adds_pct": round(cpu[full_agent.pid] - cpu[ingest_agent.pid], 2),
                "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss1, 1),
            }
            for p in procs:
                p.terminate()
                p.wait(30)
            print(json.dumps(result))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
