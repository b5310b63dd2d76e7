"""`make bench-ingest`: the agent vs a seed-style bridge (one synchronous HTTP write per message).

Starts a real Mosquitto and a real influxd on loopback, runs the agent as its own process, publishes N QoS 1 seed
messages from a separate publisher process (with back-pressure), verifies the stored counts, then does the same
through the naive bridge, and measures the agent's CPU at a steady 100 msg/s. The last line printed is one JSON
object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tools.services import Influxd, Mosquitto

ROOT = Path(__file__).resolve().parents[2]

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stored(influxd: Influxd, db: str) -> int:
    res = influxd.query('SELECT count("EnergyIn") FROM "EnergyMeter"', db=db)["results"][0]
    return res["series"][0]["values"][0][1] if "series" in res else 0


def wait_stored(influxd: Influxd, db: str, n: int, timeout: float, proc_pid: int | None = None) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stored(influxd, db) >= n:
            return time.monotonic()
        time.sleep(0.05)
    return time.monotonic()


# -- child processes -----------------------------------------------------------------------------------------
def run_publisher(port: int, n: int, rate: float, client_id: str, offset: int) -> None:
    from tools.publish import Publisher, seed_message

    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def gen():
        start = time.monotonic()
        for i in range(n):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield seed_message("meter-1", "energy", "EnergyMeter", t0 + timedelta(milliseconds=offset + i),
                               {"EnergyIn": float(i), "Power": 500.0})

    pub = Publisher("127.0.0.1", port, client_id=client_id, max_inflight=1000)
    pub.publish_all(gen(), timeout=600)
    pub.close()


def run_naive_bridge(port: int, influx_url: str, db: str) -> None:
    """The hackathon design: subscribe, and for every message one synchronous HTTP write."""
    import paho.mqtt.client as mqtt

    from edge_agent.config import RuleConfig
    from edge_agent.ingest.formats import parse_seed_json

    rule = RuleConfig(topic="hack/+device/+channel", format="seed_json")
    url = f"{influx_url}/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})

    def on_message(client, userdata, msg):
        points = parse_seed_json(rule, {}, msg.payload, time.time_ns())
        body = "\n".join(p.to_line() for p in points).encode()
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10).read()

    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="naive-bridge",
                    clean_session=False)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("hack/#", qos=1)
    c.connect("127.0.0.1", port)
    c.loop_forever()


# -- the benchmark ----------------------------------------------------------------------------------------------
def spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def publish(port: int, n: int, rate: float, client_id: str, offset: int = 0) -> subprocess.Popen:
    return spawn(__file__, "publish", "--port", str(port), "--n", str(n), "--rate", str(rate),
                 "--client-id", client_id, "--offset", str(offset))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("publish")
    p.add_argument("--port", type=int)
    p.add_argument("--n", type=int)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--client-id")
    p.add_argument("--offset", type=int, default=0)
    b = sub.add_parser("naive")
    b.add_argument("--port", type=int)
    b.add_argument("--url")
    b.add_argument("--db")
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--naive-messages", type=int, default=None, help="default: the same N")
    args = ap.parse_args()
    if args.cmd == "publish":
        return run_publisher(args.port, args.n, args.rate, args.client_id, args.offset)
    if args.cmd == "naive":
        return run_naive_bridge(args.port, args.url, args.db)

    n = args.messages
    n_naive = args.naive_messages or n
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_s:
        tmp = Path(tmp_s)
        with Mosquitto(tmp / "mq") as broker, Influxd(tmp / "db") as db:
            db.create_database("agent")
            db.create_database("naive")
            cfg = tmp / "agent.toml"
            cfg.write_text(f"""[agent]\nstate_dir = "{tmp / 'state'}"
[mqtt]\nport = {broker.port}\nclient_id = "bench-agent"
[storage]\nurl = "{db.url}"\ndatabase = "agent"
[health]\ninterval_s = 3600
[[rules]]\ntopic = "hack/+device/+channel"\nformat = "seed_json"
""")
            agent = spawn("-m", "edge_agent", "run", "--config", str(cfg), "--log-level", "WARNING")
            time.sleep(2.0)  # connected and subscribed
            cpu0 = cpu_seconds(agent.pid)
            print(f"publishing {n} QoS 1 messages through the agent …", file=sys.stderr)
            t0 = time.monotonic()
            pub = publish(broker.port, n, 0, "bench-pub-agent")
            peak_rss = 0.0
            while stored(db, "agent") < n and time.monotonic() - t0 < 600:
                peak_rss = max(peak_rss, rss_mb(agent.pid))
                time.sleep(0.1)
            t1 = wait_stored(db, "agent", n, 10)
            pub.wait(60)
            agent_cpu = cpu_seconds(agent.pid) - cpu0
            agent_stored = stored(db, "agent")
            agent_rate = n / (t1 - t0)
            print(f"agent: {agent_stored} stored, {agent_rate:.0f} msg/s", file=sys.stderr)

            # steady 100 msg/s for 20 s
            time.sleep(1.5)
            steady_n = 2000
            c0, s0 = cpu_seconds(agent.pid), time.monotonic()
            publish(broker.port, steady_n, 100, "bench-pub-steady", offset=n).wait(120)
            steady_pct = 100 * (cpu_seconds(agent.pid) - c0) / (time.monotonic() - s0)
            wait_stored(db, "agent", n + steady_n, 20)
            rss = max(peak_rss, rss_mb(agent.pid))
            agent.terminate()
            agent.wait(30)

            print(f"publishing {n_naive} QoS 1 messages through the naive bridge …", file=sys.stderr)
            bridge = spawn(__file__, "naive", "--port", str(broker.port), "--url", db.url, "--db", "naive")
            time.sleep(2.0)
            t0 = time.monotonic()
            pub = publish(broker.port, n_naive, 0, "bench-pub-naive")
            t1 = wait_stored(db, "naive", n_naive, 900)
            pub.wait(60)
            naive_stored = stored(db, "naive")
            naive_rate = n_naive / (t1 - t0)
            bridge.terminate()
            bridge.wait(10)

    result = {"qos": 1, "messages": n, "stored": agent_stored, "lost": n - min(agent_stored, n),
              "agent_msgs_per_s": round(agent_rate), "naive_msgs_per_s": round(naive_rate),
              "ratio": round(agent_rate / naive_rate, 1),
              "agent_cpu_us_per_msg": round(agent_cpu / n * 1e6, 1), "agent_rss_mb": round(rss, 1),
              "steady_100_msgs_cpu_pct": round(steady_pct, 2)}
    if n_naive != n or naive_stored != n_naive:
        result.update(naive_messages=n_naive, naive_stored=naive_stored)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
