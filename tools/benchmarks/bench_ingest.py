"""`make bench-ingest`: the agent against the real limit, a bare paho QoS 1 subscriber on the same broker.

Starts a real Mosquitto and a real influxd on loopback and runs the agent as its own process (its spool fsyncs
every group, as always). Each round publishes N QoS 1 seed messages from a separate publisher process (with
back-pressure) twice: once to `bare/…`, where a bare paho subscriber (persistent session, QoS 1, paho's automatic
acks, it only counts) receives them, and once to `hack/…`, where the agent takes them into the database. The
topics have the same length and the payloads are the same, so the broker and the publisher do the same work for
both. Rounds alternate the two, so that a neighbour's load on a shared machine hits both alike; rates are medians
over the rounds.

- `bare_msgs_per_s`: N / (last message received by the bare subscriber − publisher start);
- `agent_msgs_per_s`: N / (last point in the database − publisher start): end to end, so it includes the
  drainer's last partial batch (at most `[spool] batch_interval_s`, 1 s, plus one write);
- `ratio_vs_bare` = agent / bare; `lost` = published − stored, over all rounds;
- `agent_cpu_us_per_msg`: the agent's CPU (user + system, all threads) over its phases / messages;
- then the agent's CPU at a steady 100 msg/s, and optionally (`--naive-messages`, 0 = skip) the seed project's
  design (one synchronous HTTP write per message) for comparison.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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


def wait_cpu(proc: subprocess.Popen, timeout: float = 60) -> float:
    """Wait for a child to exit; returns the CPU seconds (user + system) it used."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.02)
    raise TimeoutError(f"{proc.args} did not exit within {timeout} s")


def stored(influxd: Influxd, db: str) -> int:
    res = influxd.query('SELECT count("EnergyIn") FROM "EnergyMeter"', db=db)["results"][0]
    return res["series"][0]["values"][0][1] if "series" in res else 0


def wait_stored(influxd: Influxd, db: str, n: int, timeout: float, watch_pid: int | None = None) -> tuple[float, float]:
    """Poll until `n` points are stored; returns (the monotonic time it was seen, peak RSS of `watch_pid` in MB)."""
    deadline = time.monotonic() + timeout
    peak = 0.0
    while time.monotonic() < deadline:
        if watch_pid:
            peak = max(peak, rss_mb(watch_pid))
        if stored(influxd, db) >= n:
            return time.monotonic(), peak
        time.sleep(0.05)
    return time.monotonic(), peak


# -- child processes -----------------------------------------------------------------------------------------
def run_publisher(port: int, n: int, rate: float, client_id: str, offset: int, topic_root: str) -> None:
    from tools.publish import Publisher, seed_message

    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def gen():
        start = time.monotonic()
        for i in range(n):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            topic, payload = seed_message("meter-1", "energy", "EnergyMeter", t0 + timedelta(milliseconds=offset + i),
                                          {"EnergyIn": float(i), "Power": 500.0})
            yield topic.replace("hack/", f"{topic_root}/", 1), payload

    pub = Publisher("127.0.0.1", port, client_id=client_id, max_inflight=1000)
    pub.publish_all(gen(), timeout=600)
    pub.close()


def run_bare_subscriber(port: int, n: int, client_id: str, topic_root: str) -> None:
    """The reference: plain paho, QoS 1, a persistent session like the agent's; it counts and acknowledges
    (paho's automatic PUBACK after on_message) and does nothing else. Prints "subscribed", then one JSON line
    when it has `n` messages; it unsubscribes before leaving so the broker keeps no queue for it."""
    import paho.mqtt.client as mqtt

    state = {"count": 0, "last": 0.0, "cpu0": 0.0}

    def on_message(client, userdata, msg):
        state["count"] += 1
        if state["count"] == 1:
            state["cpu0"] = time.process_time()
        if state["count"] == n:
            state["last"] = time.monotonic()
            state["cpu"] = time.process_time() - state["cpu0"]
            client.unsubscribe(f"{topic_root}/#")

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"{topic_root}/#", qos=1)
    client.on_subscribe = lambda *a: print("subscribed", flush=True)
    client.on_unsubscribe = lambda c, *a: c.disconnect()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()
    print(json.dumps({"count": state["count"], "last": state["last"], "cpu_s": state.get("cpu", 0.0)}), flush=True)


def run_naive_bridge(port: int, influx_url: str, db: str) -> None:
    """The hackathon design: subscribe, and for every message one synchronous HTTP write."""
    import paho.mqtt.client as mqtt

    from edge_agent.ingest.formats import parse_seed_json
    from edge_agent.ingest.ruleconfig import RuleConfig

    rule = RuleConfig(topic="naive/+device/+channel", format="seed_json")
    url = f"{influx_url}/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})

    def on_message(client, userdata, msg):
        points = parse_seed_json(rule, {}, msg.payload, time.time_ns())
        body = "\n".join(p.to_line() for p in points).encode()
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10).read()

    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="naive-bridge",
                    clean_session=False)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("naive/#", qos=1)
    c.connect("127.0.0.1", port)
    c.loop_forever()


# -- the benchmark ----------------------------------------------------------------------------------------------
def spawn(*args: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.DEVNULL,
                            text=True)


def publish(port: int, n: int, rate: float, client_id: str, offset: int = 0, topic_root: str = "hack"
            ) -> subprocess.Popen:
    return spawn("-m", "tools.benchmarks.bench_ingest", "publish", "--port", str(port), "--n", str(n),
                 "--rate", str(rate), "--client-id", client_id, "--offset", str(offset), "--topic-root", topic_root)


def bare_round(broker: Mosquitto, n: int, i: int) -> dict:
    """One bare-subscriber phase: its rate, its own CPU per message, the broker's and the publisher's CPU."""
    sub = spawn("-m", "tools.benchmarks.bench_ingest", "bare", "--port", str(broker.port), "--n", str(n),
                "--client-id", f"bench-bare-{i}", stdout=subprocess.PIPE)
    if sub.stdout.readline().strip() != "subscribed":
        raise RuntimeError("the bare subscriber did not subscribe")
    b0 = cpu_seconds(broker.proc.pid)
    t0 = time.monotonic()
    pub = publish(broker.port, n, 0, f"bench-pub-bare-{i}", topic_root="bare")
    line = sub.stdout.readline()
    seconds = time.monotonic() - t0
    broker_cpu = cpu_seconds(broker.proc.pid) - b0
    sub.wait(60)
    pub_cpu = wait_cpu(pub)
    doc = json.loads(line)
    if doc["count"] != n:
        raise RuntimeError(f"the bare subscriber received {doc['count']} of {n}")
    return {"rate": n / (doc["last"] - t0), "cpu_us": doc["cpu_s"] / n * 1e6,
            "broker_pct": 100 * broker_cpu / seconds, "publisher_us": pub_cpu / n * 1e6}


def profiler(pid: int, out: Path) -> subprocess.Popen | None:
    """py-spy sampling the agent (the thread holding the GIL: where its Python CPU goes) into a collapsed-stack file; None without py-spy."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("no py-spy (pip install py-spy): not profiling", file=sys.stderr)
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--threads", "--gil",
                             "--nonblocking", "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("publish")
    p.add_argument("--port", type=int)
    p.add_argument("--n", type=int)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--client-id")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--topic-root", default="hack")
    b = sub.add_parser("bare")
    b.add_argument("--port", type=int)
    b.add_argument("--n", type=int)
    b.add_argument("--client-id")
    b = sub.add_parser("naive")
    b.add_argument("--port", type=int)
    b.add_argument("--url")
    b.add_argument("--db")
    ap.add_argument("--messages", type=int, default=50_000, help="per phase and round")
    ap.add_argument("--rounds", type=int, default=3, help="bare, agent alternately, this many times each")
    ap.add_argument("--naive-messages", type=int, default=10_000, help="the per-message HTTP bridge; 0: skip")
    ap.add_argument("--profile", type=Path, help="py-spy the agent during its phases into FILE (collapsed stacks)")
    args = ap.parse_args()
    if args.cmd == "publish":
        return run_publisher(args.port, args.n, args.rate, args.client_id, args.offset, args.topic_root)
    if args.cmd == "bare":
        return run_bare_subscriber(args.port, args.n, args.client_id, "bare")
    if args.cmd == "naive":
        return run_naive_bridge(args.port, args.url, args.db)

    n, rounds = args.messages, args.rounds
    bare, agent_rates, agent_broker_pct, agent_pub_us = [], [], [], []
    agent_cpu = 0.0
    peak_rss = 0.0
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
            for i in range(rounds):
                print(f"round {i + 1}/{rounds}: {n} QoS 1 messages to the bare subscriber …", file=sys.stderr)
                bare.append(bare_round(broker, n, i))
                print(f"  bare: {bare[-1]['rate']:.0f} msg/s; now through the agent …", file=sys.stderr)
                time.sleep(1.0)
                spy = profiler(agent.pid, args.profile.with_suffix(f".{i}.txt")) if args.profile else None
                cpu0, b0 = cpu_seconds(agent.pid), cpu_seconds(broker.proc.pid)
                t0 = time.monotonic()
                pub = publish(broker.port, n, 0, f"bench-pub-agent-{i}", offset=i * n)
                t1, rss = wait_stored(db, "agent", (i + 1) * n, 600, agent.pid)
                agent_broker_pct.append(100 * (cpu_seconds(broker.proc.pid) - b0) / (t1 - t0))
                agent_pub_us.append(wait_cpu(pub) / n * 1e6)
                agent_cpu += cpu_seconds(agent.pid) - cpu0
                if spy:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                peak_rss = max(peak_rss, rss)
                agent_rates.append(n / (t1 - t0))
                print(f"  agent: {agent_rates[-1]:.0f} msg/s", file=sys.stderr)
                time.sleep(1.0)
            agent_stored = stored(db, "agent")

            # steady 100 msg/s for 20 s
            time.sleep(1.5)
            steady_n = 2000
            c0, s0 = cpu_seconds(agent.pid), time.monotonic()
            publish(broker.port, steady_n, 100, "bench-pub-steady", offset=rounds * n).wait(120)
            steady_pct = 100 * (cpu_seconds(agent.pid) - c0) / (time.monotonic() - s0)
            wait_stored(db, "agent", rounds * n + steady_n, 20)
            peak_rss = max(peak_rss, rss_mb(agent.pid))
            agent.terminate()
            agent.wait(30)

            naive_rate = naive_stored = None
            if args.naive_messages:
                print(f"{args.naive_messages} QoS 1 messages through the naive bridge …", file=sys.stderr)
                bridge = spawn("-m", "tools.benchmarks.bench_ingest", "naive", "--port", str(broker.port),
                               "--url", db.url, "--db", "naive")
                time.sleep(2.0)
                t0 = time.monotonic()
                pub = publish(broker.port, args.naive_messages, 0, "bench-pub-naive", topic_root="naive")
                t1, _ = wait_stored(db, "naive", args.naive_messages, 900)
                pub.wait(60)
                naive_stored = stored(db, "naive")
                naive_rate = args.naive_messages / (t1 - t0)
                bridge.terminate()
                bridge.wait(10)

    bare_rate = statistics.median(r["rate"] for r in bare)
    agent_rate = statistics.median(agent_rates)
    total = rounds * n
    result = {"qos": 1, "fsync": True, "messages": n, "rounds": rounds, "stored": agent_stored,
              "lost": total - min(agent_stored, total),
              "bare_msgs_per_s": round(bare_rate), "agent_msgs_per_s": round(agent_rate),
              "ratio_vs_bare": round(agent_rate / bare_rate, 3),
              "agent_cpu_us_per_msg": round(agent_cpu / total * 1e6, 1),
              "bare_cpu_us_per_msg": round(statistics.median(r["cpu_us"] for r in bare), 1),
              "broker_cpu_pct_bare": round(statistics.median(r["broker_pct"] for r in bare)),
              "broker_cpu_pct_agent": round(statistics.median(agent_broker_pct)),
              "publisher_cpu_us_per_msg": round(statistics.median([r["publisher_us"] for r in bare] + agent_pub_us), 1),
              "agent_rss_mb": round(peak_rss, 1), "steady_100_msgs_cpu_pct": round(steady_pct, 2),
              "per_round_bare_agent": [[round(b["rate"]), round(a)] for b, a in zip(bare, agent_rates, strict=True)]}
    if naive_rate is not None:
        result.update(naive_messages=args.naive_messages, naive_stored=naive_stored,
                      naive_msgs_per_s=round(naive_rate))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
