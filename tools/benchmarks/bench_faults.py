"""`make bench-faults`: faults under a steady stream, counted exactly.

Each scenario runs the real agent as its own process against a fresh database while a QoS 1 publisher sends
`--rate` messages per second (each message one point with its own timestamp and a unique value):

- influxd_down: the database stops for 30 s in the middle of the stream;
- broker_restart: Mosquitto (persistent) restarts in the middle of the stream;
- sigkill_x3: the agent is SIGKILLed three times and started again at once;
- disk_full: the spool lives on a 1 MiB tmpfs while the database is down, so the disk fills up (needs root to
  mount; skipped otherwise).

Per scenario: published (acknowledged by the broker), stored (points in the database), missing, duplicated
(stored points minus distinct values: a point stored twice under two timestamps would show here), and the seconds
until everything was stored. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tools.publish import Publisher, seed_message
from tools.services import Influxd, Mosquitto

ROOT = Path(__file__).resolve().parents[2]

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def say(msg: str) -> None:
    print(f"[bench-faults] {msg}", file=sys.stderr, flush=True)


def agent_config(tmp: Path, broker: int, influx: str, db: str, spool_dir: str = "spool") -> Path:
    cfg = tmp / "agent.toml"
    cfg.write_text(f"""[agent]
state_dir = "{tmp / 'state'}"
[mqtt]
port = {broker}
client_id = "bench-faults-{db}"
reconnect_max_s = 2
[storage]
url = "{influx}"
database = "{db}"
timeout_s = 5
[spool]
dir = "{spool_dir}"
segment_bytes = 65536
[health]
interval_s = 5
[logging]
file = "agent.log"
[[rules]]
topic = "hack/+device/+channel"
format = "seed_json"
""")
    return cfg


def spawn(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_log(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not in {path}")


class Stream(threading.Thread):
    """n messages at `rate` per second, QoS 1 with back-pressure; `at(i, fn)` runs fn when message i is sent."""

    def __init__(self, port: int, n: int, rate: float, client_id: str):
        super().__init__(daemon=True)
        self.port, self.n, self.rate, self.client_id = port, n, rate, client_id
        self.hooks: dict[int, list] = {}
        self.sent = 0
        self.error: Exception | None = None

    def at(self, i: int, fn) -> None:
        self.hooks.setdefault(i, []).append(fn)

    def messages(self):
        start = time.monotonic()
        for i in range(self.n):
            for fn in self.hooks.get(i, []):
                threading.Thread(target=fn, daemon=True).start()
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield seed_message("m1", "energy", "EnergyMeter", T0 + timedelta(milliseconds=i), {"EnergyIn": float(i)})

    def run(self) -> None:
        pub = Publisher("127.0.0.1", self.port, client_id=self.client_id, max_inflight=500)
        try:
            self.sent = pub.publish_all(self.messages(), timeout=300)
        except Exception as exc:
            self.error = exc
        finally:
            pub.close()


def counts(db: Influxd, name: str) -> tuple[int, int]:
    try:
        res = db.query('SELECT count("EnergyIn"), count(distinct("EnergyIn")) FROM "EnergyMeter"',
                       db=name)["results"][0]
    except OSError:  # the database is down (the fault) or restarting
        return 0, 0
    if "series" not in res:
        return 0, 0
    row = res["series"][0]["values"][0]
    return int(row[1]), int(row[2])


def settle(db: Influxd, name: str, n: int, timeout: float = 240) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if counts(db, name)[0] >= n:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def scenario(name: str, tmp: Path, broker: Mosquitto, db: Influxd, n: int, rate: float, fault,
             spool_dir: str = "spool") -> dict:
    say(f"{name}: {n} messages at {rate:.0f}/s")
    work = tmp / name
    work.mkdir()
    db.create_database(name)
    cfg = agent_config(work, broker.port, db.url, name, spool_dir)
    procs = [spawn(cfg)]
    wait_log(work / "state" / "agent.log", "subscribed")
    stream = Stream(broker.port, n, rate, f"pub-{name}")
    fault(stream, procs, cfg, work)
    stream.start()
    stream.join(600)
    published = stream.sent
    # from the last message acknowledged by the broker until all are stored (until 2026-12 this added the stream's
    # own duration, minus its nominal n / rate, and so counted the settle time twice)
    seconds = settle(db, name, n)
    stored, distinct = counts(db, name)
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(30)
    return {"published": published, "stored": stored, "missing": n - distinct, "duplicated": stored - distinct,
            "seconds_to_all_stored_after_last_sent": round(max(seconds, 0.0), 1),
            **({"publisher_error": str(stream.error)} if stream.error else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each stream")
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    results: dict = {"rate_msgs_per_s": args.rate, "messages_per_scenario": n}
    try:
        with Mosquitto(tmp / "mosquitto", persistence=True) as broker, Influxd(tmp / "influxd") as db:

            def influx_down(stream, procs, cfg, work):
                def fault():
                    db.stop()
                    time.sleep(30)
                    db.start()
                stream.at(n // 4, fault)

            results["influxd_down_30s"] = scenario("influxd_down", tmp, broker, db, n, args.rate, influx_down)

            def broker_restart(stream, procs, cfg, work):
                stream.at(n // 2, broker.restart)

            results["broker_restart"] = scenario("broker_restart", tmp, broker, db, n, args.rate, broker_restart)

            def sigkill(stream, procs, cfg, work):
                def kill():
                    procs[-1].send_signal(signal.SIGKILL)
                    procs[-1].wait(10)
                    procs.append(spawn(cfg))
                for k in (1, 2, 3):
                    stream.at(k * n // 4, kill)

            results["sigkill_x3"] = scenario("sigkill_x3", tmp, broker, db, n, args.rate, sigkill)

            if os.geteuid() == 0 and shutil.which("mount"):
                spool = tmp / "spool-fs"
                spool.mkdir()
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=True)
                try:
                    def disk_full(stream, procs, cfg, work):
                        def fault():
                            db.stop()
                            deadline = time.monotonic() + 60
                            while shutil.disk_usage(spool).free > 32 << 10 and time.monotonic() < deadline:
                                time.sleep(0.5)
                            time.sleep(5)  # full: the agent holds messages unacknowledged
                            db.start()
                        stream.at(n // 10, fault)

                    results["disk_full"] = scenario("disk_full", tmp, broker, db, n, args.rate, disk_full,
                                                    spool_dir=str(spool))
                    results["disk_full"]["spool_fs_bytes"] = 1 << 20
                finally:
                    subprocess.run(["umount", "-l", str(spool)], check=False)
            else:
                results["disk_full"] = "skipped: mounting a small tmpfs for the spool needs root"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
