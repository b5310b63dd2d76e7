"""`make bench-edge`: int8 inference time per model, a full forecast cycle against a real influxd, agent RSS.

Cycles: `cycle_stepped_ms` over consecutive boundaries (as the agent runs them: each also scores what became
known; `cycle_first_ms` is the first, which reads the scored slots back), `cycle_ms` the same boundary repeated.

Bundles: `--bundles DIR` (e.g. from `python -m training train`), else a quick training on the real data.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.schema import DAY_NS
from tools.benchmarks.bench_ingest import rss_mb
from tools.services import Influxd, Mosquitto, free_port, spawn_agent, wait_for_api

ROOT = Path(__file__).resolve().parents[2]

CSV = ROOT / "data" / "seed_house" / "raw_data.csv"


def median_us(model, runs: int) -> float:
    x = np.zeros((1, model.spec.steps, model.spec.n_features), np.float32)
    for _ in range(20):
        model.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        model.run(x)
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", type=Path)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--cycles", type=int, default=30)
    args = ap.parse_args()

    from shared import signing
    from shared.inference import LoadedModel
    from shared.interpreter import runtime

    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp_s:
        tmp = Path(tmp_s)
        bundles = args.bundles
        if bundles is None:
            print("training quick bundles on the real data …", file=sys.stderr)
            bundles = tmp / "bundles"
            subprocess.run([sys.executable, "-m", "training", "train", "--data", str(CSV), "--until",
                            "2023-06-18T02:00:00Z", "--out", str(bundles), "--quick"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        names = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
        models = {n: LoadedModel.from_dir(bundles / n) for n in names}
        infer = {n: round(median_us(m, args.runs), 1) for n, m in models.items()}
        print(f"median inference µs: {infer}", file=sys.stderr)

        keys = signing.generate_keypair()
        for n in names:
            signing.sign_bundle_dir(bundles / n, keys)
        with Mosquitto(tmp / "mq") as broker, Influxd(tmp / "db") as db:
            from shared.points import Point
            from shared.series import parse_time_ns, read_csv
            from shared.storage import StorageConfig, open_storage

            rows = read_csv(CSV)
            issue = parse_time_ns("2023-07-05T12:00:00Z")
            sel = (rows.times > issue - 10 * DAY_NS) & (rows.times <= issue)
            open_storage(StorageConfig(url=db.url, database="energy")).write(
                [Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": float(v)}, int(t))
                 for t, v in zip(rows.times[sel], rows.values[sel], strict=True)])
            port = free_port()
            token = "bench-token-0123456789"
            cfg = tmp / "agent.toml"
            cfg.write_text(f"""[agent]\nstate_dir = "{tmp / 'state'}"
[mqtt]\nport = {broker.port}\nclient_id = "bench-edge"
[storage]\nurl = "{db.url}"\ndatabase = "energy"
[health]\ninterval_s = 3600
[forecast]\nmeasurement = "EnergyMeter"\nfield = "EnergyIn"\ntags = {{ device_id = "meter-1" }}
[api]\nport = {port}\ntoken = "{token}"\npublic_key = "{keys.public_text}"
[[rules]]\ntopic = "hack/+device/+channel"\nformat = "seed_json"
""")
            from shared.agent_client import AgentClient

            agent = spawn_agent(cfg, "--log-level", "WARNING")
            client = AgentClient(f"http://127.0.0.1:{port}", token)
            wait_for_api(client)
            for n in names:
                client.push(bundles / n)
            time.sleep(1.0)
            rss = rss_mb(agent.pid)
            agent.terminate()
            agent.wait(20)

            # full cycles in-process: read window, infer all four, write, publish
            from edge_agent.agent import Agent
            from edge_agent.config import load_config

            a = Agent(load_config(cfg), clock=lambda: __import__("datetime").datetime.fromtimestamp(
                issue / 1e9, __import__("datetime").UTC), components=("forecast",))
            a.start()
            fc = a.components["forecast"]
            assert len(a.ctx.models().loaded()) == 4, a.ctx.models().loaded()
            # consecutive boundaries first, as the agent runs them (each cycle also scores what became known),
            # then the same boundary again and again (nothing new to score)
            stepped, skill = [], []
            for k in range(args.cycles):
                t = time.perf_counter()
                fc.run_once(issue - (args.cycles - 1 - k) * 900 * 10**9)
                stepped.append((time.perf_counter() - t) * 1000)
                skill.append(a.health.get("skill_ms"))  # the live skill's share (0 before issue 16)
            cycles = []
            for _ in range(args.cycles):
                t = time.perf_counter()
                results = fc.run_once(issue)
                cycles.append((time.perf_counter() - t) * 1000)
            assert {r.name for r in results} == set(names), [r.name for r in results]
            a.stop()

    rt = runtime()
    print(json.dumps({"runtime": f"{rt.name} {rt.version}", "cnn_int8_us": infer["cnn-1"],
                      "lstm_int8_us": infer["lstm-1"], "cnn96_int8_us": infer["cnn-96"],
                      "lstm96_int8_us": infer["lstm-96"], "cycle_ms": round(statistics.median(cycles), 1),
                      "cycle_stepped_ms": round(statistics.median(stepped), 1),
                      "cycle_first_ms": round(stepped[0], 1), "skill_ms": round(statistics.median(skill), 1),
                      "agent_rss_mb": round(rss, 1)}))


if __name__ == "__main__":
    main()
