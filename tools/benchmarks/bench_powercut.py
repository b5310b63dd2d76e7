"""`make bench-powercut`: power cuts at random moments, and what survives them (issue 24).

The agent's state directory lives on a filesystem that keeps what was not synced in memory and loses it at the
cut (tools/powercut_fs.py, `torn` mode: any subset of the unsynced pages, a prefix of the unsynced directory
operations; names are durable only once their directory is fsynced). The database lives on a second one that
behaves like ext4 with its kernel (names and truncated sizes committed with any fsync and every 5 s, data written
back after 30 s). Mosquitto runs beside them and survives the cuts: it stands for "whatever the agent did not
acknowledge is still held by the sender", so anything the agent acknowledged and then lost is missing at the end.

A QoS 1 publisher streams a grid meter's readings (each with its own time, 60 s apart, from 30 days ago, a unique
counter value) and every 25th message a payload that is not JSON (dead-lettered). Each cycle starts influxd and
the agent (ingest, the energy flow with its Home Assistant totals, the spool on small segments), lets them run for
a random 0.3-3 s — in a third of the cycles influxd crashes at a random moment first, so the agent spools, and the
next cycle drains the backlog — then cuts the power: SIGKILL to both, and the filesystems forget what they may.
After each cut, before anything restarts, the state is read back as the agent would: the spool (every record's
crc, nothing quarantined), the dead-letter file (every line an entry), flow_totals.json (parses, and never behind
the totals the agent had already published on MQTT). At the end everything restarts, drains, and the database is
counted: every acknowledged reading stored (acked_lost), none twice (duplicates), every bad message in the
dead-letter file.

The last line printed is `{"cycles", "acked_lost", "unreadable", "duplicates"}` (target 0, 0, 0); the details go
to stderr. `--cycles N --seed S` (the same seed replays the same cuts, up to timing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

from edge_agent.ingest.deadletter import DeadLetter, read_entries
from edge_agent.ingest.spool import Spool
from tools.powercut_fs import PowercutFS
from tools.publish import Publisher, seed_message
from tools.services import Influxd, Mosquitto

ROOT = Path(__file__).resolve().parents[2]
DB = "powercut"
PREFIX = "powercut"
BAD_EVERY = 25


def say(msg: str) -> None:
    print(f"[bench-powercut] {msg}", file=sys.stderr, flush=True)


def agent_config(path: Path, state: Path, log: Path, broker: int, influx: str) -> Path:
    path.write_text(f"""[agent]
state_dir = "{state}"
[mqtt]
port = {broker}
client_id = "powercut-agent"
subscribe = ["hack/#"]
reconnect_min_s = 1
reconnect_max_s = 1
read_coalesce_s = 0
[storage]
url = "{influx}"
database = "{DB}"
timeout_s = 2
[spool]
segment_bytes = 8192
commit_interval_s = 0.3
commit_max_messages = 16
cursor_interval_s = 0.5
batch_points = 200
batch_interval_s = 0.2
[health]
interval_s = 0.5
[logging]
file = "{log}"
[publish]
topic_prefix = "{PREFIX}"
discovery = false
[flow]
delay_s = 0
lookback_slots = 4
late_debounce_s = 0.3
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = {{ device_id = "g" }}
import_field = "EnergyIn"
[[rules]]
topic = "hack/+device/+channel"
format = "seed_json"
""")
    return path


class Stream(threading.Thread):
    """Readings at `rate` per second until stopped; message i is bad (not JSON) when i % BAD_EVERY == 7."""

    def __init__(self, port: int, rate: float):
        super().__init__(daemon=True)
        self.port, self.rate = port, rate
        self.stop = threading.Event()
        self.sent = 0
        self.pub: Publisher | None = None
        self.error: Exception | None = None
        self.t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)

    @staticmethod
    def bad(i: int) -> bool:
        return i % BAD_EVERY == 7

    def message(self, i: int) -> tuple[str, bytes]:
        if self.bad(i):
            return "hack/g/m", f"not json {i}".encode()
        return seed_message("g", "m", "EnergyMeter", self.t0 + timedelta(seconds=60 * i), {"EnergyIn": float(i)})

    def messages(self):
        start = time.monotonic()
        i = 0
        while not self.stop.is_set():
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield self.message(i)
            i += 1

    def run(self) -> None:
        pub = self.pub = Publisher("127.0.0.1", self.port, client_id="powercut-publisher", max_inflight=200)
        try:
            self.sent = pub.publish_all(self.messages(), timeout=600)
        except Exception as exc:
            self.error = exc
        finally:
            pub.close()


class TotalsWatch:
    """The newest flow totals the agent published (retained MQTT): what Home Assistant has seen."""

    def __init__(self, port: int):
        self.last_slot: str | None = None
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="powercut-ha")
        self.client.on_message = self._message
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"{PREFIX}/flow/totals", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client, userdata, msg) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            slot = json.loads(msg.payload).get("last_slot")
            if slot and (self.last_slot is None or slot > self.last_slot):
                self.last_slot = slot

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_log(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not in {path}")


def kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def read_back(state: Path, published_slot: str | None, problems: dict) -> int:
    """Open what the agent keeps as it would after the cut; the number of things that cannot be read."""
    bad = 0
    spool_dir = state / "spool"
    if spool_dir.exists():
        try:
            s = Spool(spool_dir)
            if s.damaged_records:
                problems["spool_damaged_records"] += s.damaged_records
                bad += s.damaged_records
            s.close()
        except Exception as exc:
            problems["spool_unreadable"] += 1
            problems["errors"].append(f"spool: {exc!r}")
            bad += 1
    dl_path = state / "deadletter.jsonl"
    if dl_path.exists():
        dl = DeadLetter(dl_path)
        problems["deadletter_torn_tails"] += bool(dl.torn_bytes)
        dl.close()
        _entries, unread = read_entries(dl_path)
        if unread:
            problems["deadletter_unreadable_lines"] += unread
            bad += unread
    totals = state / "flow_totals.json"
    if totals.exists():
        try:
            doc = json.loads(totals.read_text())
            until = doc["until"]
            if not isinstance(doc["totals"], dict) or not isinstance(until, int):
                raise ValueError("not the totals")
            if published_slot:
                published = int(datetime.fromisoformat(published_slot.replace("Z", "+00:00")).timestamp()) * 10**9
                if until < published:
                    problems["totals_behind_published"] += 1
                    bad += 1
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems["totals_unreadable"] += 1
            problems["errors"].append(f"flow_totals.json: {exc!r}")
            bad += 1
    elif published_slot:
        problems["totals_missing_after_publish"] += 1
        bad += 1
    return bad


def count_db(db: Influxd) -> tuple[int, int]:
    res = db.query('SELECT count("EnergyIn"), count(distinct("EnergyIn")) FROM "EnergyMeter"', db=DB)["results"][0]
    if "series" not in res:
        return 0, 0
    row = res["series"][0]["values"][0]
    return int(row[1]), int(row[2])


def run(cycles: int = 200, seed: int = 1, rate: float = 40.0, workdir: Path | None = None) -> dict:
    """Run `cycles` power cuts; returns the result with its details under `details`."""
    rng = random.Random(seed)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="bench-powercut-"))
    problems: dict = {k: 0 for k in ("spool_damaged_records", "spool_unreadable", "deadletter_unreadable_lines",
                                     "deadletter_torn_tails", "totals_unreadable", "totals_behind_published",
                                     "totals_missing_after_publish", "influxd_start_failures", "influxd_crashes")}
    problems["errors"] = []
    agent = None
    stream = totals = None
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    state_fs = PowercutFS(tmp / "state-fs", mode="torn", seed=seed)
    db_fs = PowercutFS(tmp / "db-fs", mode="torn", seed=seed + 1, journal=True)
    done = 0
    try:
        with Mosquitto(tmp / "mosquitto") as broker, state_fs, db_fs, \
                Influxd(tmp / "influxd", data_dir=db_fs.mountpoint) as db:
            db.create_database(DB)
            db.write_raw(DB, b"setup v=1 1\n")  # the series file exists and reaches the disk before any cut
            time.sleep(0.5)
            db_fs.sync()
            state = state_fs.mountpoint / "agent"
            cfg = agent_config(tmp / "agent.toml", state, tmp / "agent.log", broker.port, db.url)
            totals = TotalsWatch(broker.port)
            stream = Stream(broker.port, rate)
            for c in range(cycles):
                if not db.running:
                    try:
                        db.start(timeout=30)
                    except RuntimeError as exc:
                        problems["influxd_start_failures"] += 1
                        problems["errors"].append(f"cycle {c}: influxd does not start after the cut: "
                                                  f"{str(exc)[-300:]}")
                        break
                agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
                                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if c == 0:  # the stream starts once the agent's session (its subscription) exists at the broker
                    wait_log(tmp / "agent.log", "subscribed to")
                    stream.start()
                up = rng.uniform(1.2, 4.0)  # the agent's start takes about a second
                if rng.random() < 1 / 3:
                    crash_at = rng.uniform(0.5, up - 0.3)
                    time.sleep(crash_at)
                    kill(db.proc)  # influxd crashes: the agent spools from now on
                    db.proc = None
                    problems["influxd_crashes"] += 1
                    time.sleep(up - crash_at)
                else:
                    time.sleep(up)
                kill(agent)
                agent = None
                kill(db.proc)
                db.proc = None
                time.sleep(0.3)  # what the agent had published reaches the watcher
                state_fs.cut()
                db_fs.cut()
                bad = read_back(state, totals.last_slot, problems)
                done = c + 1
                if bad:
                    say(f"cycle {c}: {bad} unreadable ({ {k: v for k, v in problems.items() if v and k != 'errors'} })")
                if (c + 1) % 20 == 0:
                    acked = stream.pub.acked if stream.pub else 0
                    say(f"{c + 1} cycles, {acked} messages acknowledged by the broker so far")
            # the end: the stream stops, everything restarts and drains
            stream.stop.set()
            stream.join(120)
            published = stream.sent
            if not db.running:
                db.start(timeout=30)
            agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            good = sum(1 for i in range(published) if not Stream.bad(i))
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and count_db(db)[1] < good:
                time.sleep(0.5)
            time.sleep(2)
            stored, distinct = count_db(db)
            rows = db.query('SELECT "EnergyIn" FROM "EnergyMeter"', db=DB)["results"][0].get("series", [])
            have = {int(v) for _t, v in rows[0]["values"]} if rows else set()
            missing = sorted(i for i in range(published) if not Stream.bad(i) and i not in have)
            agent.terminate()
            agent.wait(60)
            agent = None
            entries = []
            for p in sorted(state.glob("deadletter.jsonl*")):
                if not p.name.endswith(".deleted"):
                    entries += read_entries(p)[0]
            bad_payloads = [e.get("payload") for e in entries if e.get("reason") == "not_json"]
            expected_bad = {f"not json {i}" for i in range(published) if Stream.bad(i)}
            bad_lost = len(expected_bad - set(bad_payloads))
            problems["deadletter_repeats"] = len(bad_payloads) - len(set(bad_payloads))
            db.stop()
            result = {"cycles": done, "acked_lost": (good - distinct) + bad_lost,
                      "unreadable": sum(v for k, v in problems.items()
                                        if k not in ("errors", "deadletter_torn_tails", "influxd_crashes",
                                                     "deadletter_repeats")),
                      "duplicates": stored - distinct}
            result["details"] = {"published": published, "readings": good, "stored": stored, "distinct": distinct,
                                 "bad_messages": len(expected_bad), "bad_lost": bad_lost,
                                 "missing": missing[:20],
                                 **{k: v for k, v in problems.items() if k != "errors"},
                                 "errors": problems["errors"][:10], "stream_error": repr(stream.error)
                                 if stream.error else None}
            return result
    finally:
        if stream is not None:
            stream.stop.set()
        if totals is not None:
            totals.close()
        kill(agent)
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)  # the read-back's spool and dead-letter repairs: counted, not shown
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=40.0, help="messages per second")
    args = ap.parse_args()
    t0 = time.monotonic()
    result = run(args.cycles, args.seed, args.rate)
    details = result.pop("details")
    details["seconds"] = round(time.monotonic() - t0, 1)
    say(json.dumps(details))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
