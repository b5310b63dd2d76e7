"""`make bench-wear`: how many bytes a house's Pi writes to its SD card per day, and how fast the database grows.

Two houses (issue 24): 6 devices reporting every 10 s and 20 devices every 1 s, each device at its own phase with a
few ms of jitter (unaligned), as a grid meter, a PV inverter, a battery and plugs (the PV + battery house of
tools/scenario.py around the real seed consumption, plugs with their own counters), each message with its own
time. Mosquitto (persistence on), influxd and the agent (ingest, the energy flow, the four int8 models forecasting
with their skill and the guard, health) run with the settings Ansible and docker-compose ship (`PI_*` below) on a
loop-mounted ext4 image (noatime, as Raspberry Pi OS mounts its root); their logs go elsewhere (journald on a Pi),
and are counted as bytes per day.

Accelerated: the agent's clock (tools/benchmarks/wear_agent.py) and the devices run `--speed` times faster than
the wall clock, and every interval that runs on the wall clock is divided by the same factor (the agent's group
commit, health and cursor; Mosquitto's autosave; influxd's cache snapshot and compaction cold durations), so a
simulated day holds the same writes, fsyncs and groups as a real one. `--hours` simulated hours are measured and
scaled to a day. Measured: sectors written to the loop device (everything: data, ext4's journal and metadata)
between a `sync` before and after the window, and each process's /proc/<pid>/io write_bytes. The weekly full
compaction of a cold shard rewrites each day's data once more: it is added as the day's compacted size
(`db_mb_per_day`), measured after a full compaction forced at the end (influxd restarted with a 1 s cold duration);
`db_mb_per_year` is that growth × 365. What acceleration cannot show: ext4's 5 s journal commit and the kernel's
30 s writeback run on the wall clock (fewer commits of unsynced metadata per simulated day: the fsynced writes,
which dominate, are exact), and journald's own writes (its input, the log bytes, is reported).

The last line printed is one JSON object:
`{"houses": {"6x10s": {"writes_mb_per_day", "db_mb_per_year", "lost", "per_process": {…}}, "20x1s": {…}}}`; the
details (fsyncs per process and file, influxd's requests, log bytes, the agent's counters) go to stderr.
Targets: ≤ 50 MB/day (6x10s), ≤ 300 MB/day (20x1s), lost 0. Needs root (loop mount).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.schema import SLOT_NS
from tools import scenario
from tools.publish import Publisher, seed_message
from tools.services import Influxd, Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "data" / "seed_house" / "raw_data.csv"
SEED_START = datetime(2023, 6, 20, tzinfo=UTC)
TOKEN = "bench-wear-token-0123456789"
DB = "energy"

# What ansible/ and docker-compose.yml ship for a Pi (docs/pi.md argues each one with its figure; a test checks
# that the shipped files say the same). Durations in seconds.
PI_AGENT_SPOOL = {"commit_interval_s": 300.0, "commit_max_messages": 2000, "cursor_interval_s": 5.0}
PI_AGENT_HEALTH = {"interval_s": 60.0, "log_interval_s": 900.0}
PI_MOSQUITTO = {"autosave_interval": 1800, "max_inflight_messages": 2500}
PI_INFLUXD = {"wal-fsync-delay": 0.0, "cache-snapshot-write-cold-duration": 600.0,
              "compact-full-write-cold-duration": 14400.0, "monitor-store-enabled": False}
PI = {"agent_spool": PI_AGENT_SPOOL, "agent_health": PI_AGENT_HEALTH, "mosquitto": PI_MOSQUITTO, "influxd": PI_INFLUXD,
      "ext4": {"fast_commit": False}}  # Raspberry Pi OS's root filesystem as it comes (fast_commit: docs/pi.md)
# One setting changed at a time (--variant), for the figures docs/pi.md argues each setting with.
VARIANTS = {
    "shipped": {},
    "agent_defaults": {"agent_spool": {"commit_interval_s": 5.0, "commit_max_messages": 16}},
    "commit_60s": {"agent_spool": {"commit_interval_s": 60.0}},
    "commit_120s": {"agent_spool": {"commit_interval_s": 120.0}},
    "commit_180s": {"agent_spool": {"commit_interval_s": 180.0}},
    "ext4_fast_commit": {"ext4": {"fast_commit": True}},
    "mosquitto_autosave_60s": {"mosquitto": {"autosave_interval": 60}},
    "influxd_internal_store": {"influxd": {"monitor-store-enabled": True}},
}


def settings(variant: str) -> dict:
    return {k: {**v, **VARIANTS[variant].get(k, {})} for k, v in PI.items()}


@dataclass(frozen=True)
class HouseSpec:
    name: str
    devices: int
    period_s: float


HOUSES = {"6x10s": HouseSpec("6x10s", 6, 10.0), "20x1s": HouseSpec("20x1s", 20, 1.0)}


def say(msg: str) -> None:
    print(f"[bench-wear] {msg}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


# -- the house ---------------------------------------------------------------------------------------------------
class Devices:
    """Readings at any (simulated) time: the flow's three devices from tools/scenario.py, and plugs."""

    def __init__(self, spec: HouseSpec, slots: list[dict], shift_ns: int, seed: int = 1):
        self.spec = spec
        self.t = np.array([int(s["time"].timestamp() * 1e9) + shift_ns for s in slots], dtype=np.int64)
        self.c = {k: np.array([s[k] for s in slots]) for k in ("c_imp", "c_exp", "c_pv", "c_chg", "c_dis")}
        self.soc = np.array([s["soc"] for s in slots])
        rng = random.Random(seed)
        self.phase = [rng.uniform(0, spec.period_s) for _ in range(spec.devices)]
        self.plug_w = [rng.uniform(5, 400) for _ in range(spec.devices)]
        self.plug_kwh = [rng.uniform(10, 900) for _ in range(spec.devices)]
        self.rng = rng

    def counter(self, key: str, t_ns: int) -> float:
        return float(np.interp(t_ns, self.t, self.c[key]))

    def power(self, key: str, t_ns: int) -> float:
        return (self.counter(key, t_ns) - self.counter(key, t_ns - 60 * 10**9)) * 60_000

    def message(self, d: int, t_ns: int) -> tuple[str, bytes]:
        when = datetime.fromtimestamp(t_ns / 1e9, UTC)
        if d == 0:
            return seed_message("house-grid", "meter", "EnergyMeter", when,
                                {"EnergyIn": round(self.counter("c_imp", t_ns), 6),
                                 "EnergyOut": round(self.counter("c_exp", t_ns), 6),
                                 "Power": round(self.power("c_imp", t_ns) - self.power("c_exp", t_ns), 1)},
                                "Grid connection", "grid_meter")
        if d == 1:
            return seed_message("pv-roof", "string1", "PvString", when,
                                {"EnergyOut": round(self.counter("c_pv", t_ns), 6),
                                 "Power": round(self.power("c_pv", t_ns), 1)}, "Roof PV", "pv_inverter")
        if d == 2:
            soc = float(np.interp(t_ns, self.t, self.soc))
            return seed_message("battery-1", "state", "Battery", when,
                                {"EnergyIn": round(self.counter("c_chg", t_ns), 6),
                                 "EnergyOut": round(self.counter("c_dis", t_ns), 6),
                                 "Power": round(self.power("c_chg", t_ns) - self.power("c_dis", t_ns), 1),
                                 "Soc": round(soc * 10, 2)}, "Home battery", "battery")
        w = self.plug_w[d] * (1 + 0.3 * math.sin(t_ns / 1e9 / 3600 + d)) + self.rng.uniform(-2, 2)
        kwh = self.plug_kwh[d] + self.plug_w[d] * (t_ns / 1e9 - 1.6e9) / 3.6e6
        return seed_message(f"plug-{d}", "energy", "EnergyMeter", when,
                            {"EnergyIn": round(kwh, 4), "Power": round(w, 1), "Voltage": round(230 + self.rng.uniform(-3, 3), 1)},
                            f"Plug {d}", "plug")


class Live(threading.Thread):
    """The devices from simulated time `start_ns` on, `speed` times faster than the wall clock."""

    def __init__(self, devices: Devices, port: int, start_ns: int, speed: float):
        super().__init__(daemon=True)
        self.devices, self.port, self.start_ns, self.speed = devices, port, start_ns, speed
        self.stop = threading.Event()
        self.sent: dict[int, int] = {}
        self.last_ns = start_ns
        self.error: Exception | None = None

    def messages(self):
        spec = self.devices.spec
        real0 = time.monotonic()
        k = 0
        while True:
            for d in range(spec.devices):
                jitter = self.devices.rng.uniform(-0.005, 0.005)
                t_ns = self.start_ns + int((k * spec.period_s + self.devices.phase[d] + jitter) * 1e9)
                delay = real0 + (t_ns - self.start_ns) / 1e9 / self.speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if self.stop.is_set():
                    return
                self.sent[d] = self.sent.get(d, 0) + 1
                self.last_ns = t_ns
                yield self.devices.message(d, t_ns)
            k += 1

    def run(self) -> None:
        pub = Publisher("127.0.0.1", self.port, client_id="bench-wear-devices", max_inflight=2000)
        try:
            pub.publish_all(self.messages(), timeout=600)
        except Exception as exc:
            self.error = exc
        finally:
            pub.close()


def device_filter(d: int) -> str:
    if d == 0:
        return "\"EnergyMeter\" WHERE device_id = 'house-grid'"
    if d == 1:
        return "\"PvString\" WHERE device_id = 'pv-roof'"
    if d == 2:
        return "\"Battery\" WHERE device_id = 'battery-1'"
    return f"\"EnergyMeter\" WHERE device_id = 'plug-{d}'"


# -- measuring -----------------------------------------------------------------------------------------------------
def proc_write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])


def device_written(dev: str) -> int:
    """Bytes written to a block device (sectors written × 512, /sys/block/<dev>/stat)."""
    fields = Path(f"/sys/block/{dev}/stat").read_text().split()
    return int(fields[6]) * 512


class SyncCounter:
    """fsync/fdatasync calls of a process and its threads (strace -c, seccomp-filtered: only those calls stop)."""

    def __init__(self, pid: int, out: Path):
        self.out = out
        self.proc = subprocess.Popen(["strace", "-f", "--seccomp-bpf", "-qq", "-y", "-e", "trace=fsync,fdatasync",
                                      "-p", str(pid), "-o", str(out)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.by_path: dict[str, int] = {}

    def stop(self) -> int | None:
        self.proc.send_signal(2)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        calls = 0
        for line in self.out.read_text().splitlines():
            if "fsync(" not in line and "fdatasync(" not in line:
                continue
            calls += 1
            path = line.split("<", 1)[1].split(">", 1)[0] if "<" in line else "?"
            where = "/".join(part if not part[:1].isdigit() else "N" for part in Path(path).parts[-3:])
            self.by_path[where] = self.by_path.get(where, 0) + 1
        return calls


def http_requests(log: Path, start: int) -> dict[str, int]:
    """influxd's HTTP log since byte `start`: writes, deletes and other queries."""
    out = {"write": 0, "delete": 0, "query": 0}
    with open(log, "rb") as f:
        f.seek(start)
        for line in f:
            if b"POST /write" in line:
                out["write"] += 1
            elif b"/query" in line:
                out["delete" if b"DELETE" in line.upper() else "query"] += 1
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class LoopFs:
    """An ext4 image mounted through a loop device (noatime)."""

    def __init__(self, image: Path, mountpoint: Path, size: str = "4G", fast_commit: bool = False):
        self.image, self.mountpoint = image, mountpoint
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", *(["-O", "fast_commit"] if fast_commit else []), str(image)],
                       check=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "loop,noatime", str(image), str(mountpoint)], check=True)
        src = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mountpoint)], capture_output=True, text=True,
                             check=True).stdout.strip()
        self.dev = Path(src).name

    def written(self) -> int:
        os.sync()
        return device_written(self.dev)

    def close(self) -> None:
        subprocess.run(["umount", str(self.mountpoint)], check=False)
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)


def influx_settings(s: dict, speed: float, full_cold_s: float | None = None) -> str:
    return (f'  wal-fsync-delay = "{duration(s["wal-fsync-delay"] / speed) if s["wal-fsync-delay"] else "0s"}"\n'
            f'  cache-snapshot-write-cold-duration = "{duration(s["cache-snapshot-write-cold-duration"] / speed)}"\n'
            f'  compact-full-write-cold-duration = '
            f'"{duration(full_cold_s if full_cold_s is not None else s["compact-full-write-cold-duration"] / speed)}"')


def agent_config(path: Path, state: Path, log: Path, broker: int, influx: str, api_port: int, public_key: str,
                 speed: float, pi: dict) -> Path:
    sp, h = pi["agent_spool"], pi["agent_health"]
    path.write_text(f"""[agent]
state_dir = "{state}"
[mqtt]
port = {broker}
client_id = "bench-wear"
subscribe = ["hack/#"]
[storage]
url = "{influx}"
database = "{DB}"
[spool]
commit_interval_s = {sp["commit_interval_s"] / speed}
commit_max_messages = {sp["commit_max_messages"]}
cursor_interval_s = {sp["cursor_interval_s"] / speed}
[health]
interval_s = {h["interval_s"] / speed}
log_interval_s = {h["log_interval_s"] / speed}
[logging]
file = "{log}"
max_bytes = 1000000000
[publish]
topic_prefix = "bench-wear"
node_id = "bench_wear"
[[rules]]
topic = "hack/+device/+channel"
format = "seed_json"
{scenario.FLOW_CONFIG.replace("delay_s = 0", "delay_s = 30").replace("late_debounce_s = 0.5", "late_debounce_s = 2")}
[forecast]
source = "slots"
measurement = "energy_flow"
field = "house"
delay_s = 60
[api]
port = {api_port}
token = "{TOKEN}"
public_key = "{public_key}"
""")
    return path


def query(db: Influxd, q: str) -> list:
    return db.query(q, db=DB)["results"][0].get("series", [])


COUNTERS = ("forecast_points", "stored", "flow_slots_written", "flow_slots_cleared", "forecast_cycles", "received",
            "direct_write_failures", "retries", "bytes_written_per_day")


def agent_counters(db: Influxd) -> dict:
    """The agent's newest health values (counters since its start)."""
    rows = query(db, "SELECT " + ", ".join(f'last("{c}")' for c in COUNTERS) + ' FROM "agent"')
    return dict(zip(COUNTERS, rows[0]["values"][0][1:], strict=True)) if rows else {}


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(what)


def settle(pid: int, window_s: float = 8.0, quiet_bytes: int = 256 << 10, timeout: float = 600) -> None:
    """Until the process writes less than `quiet_bytes` in `window_s` (influxd's compactions are done; the agent's
    small writes go on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = proc_write_bytes(pid)
        time.sleep(window_s)
        if proc_write_bytes(pid) - before < quiet_bytes:
            return


def bundles_dir(arg: Path | None, tmp: Path) -> Path:
    if arg is not None:
        return arg
    cached = ROOT / "build" / "wear-bundles"
    if all((cached / n / "model.tflite").exists() for n in ("cnn-1", "lstm-1", "cnn-96", "lstm-96")):
        return cached
    say("training quick bundles on the real data (once; cached in build/wear-bundles) …")
    subprocess.run([sys.executable, "-m", "training", "train", "--data", str(CSV), "--until",
                    "2023-06-18T02:00:00Z", "--out", str(cached), "--quick"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cached


def run_house(spec: HouseSpec, hours: float, speed: float, bundles: Path, tmp: Path, pi: dict) -> dict:
    from shared import signing
    from shared.agent_client import AgentClient
    from tools.services import wait_for_api

    work = tmp / spec.name
    work.mkdir()
    fs = LoopFs(work / "sd.img", work / "sd", fast_commit=pi["ext4"]["fast_commit"])
    sd = fs.mountpoint
    procs: list[subprocess.Popen] = []
    services: list = []
    logs = work / "logs"
    logs.mkdir()
    try:
        keys = signing.generate_keypair()
        mosq = Mosquitto(work / "mosquitto", persistence=True, persistence_dir=sd / "mosquitto",
                         extra=f"autosave_interval {max(1, round(pi['mosquitto']['autosave_interval'] / speed))}\n"
                               f"max_inflight_messages {pi['mosquitto']['max_inflight_messages']}")
        (sd / "mosquitto").mkdir()
        mosq.log = logs / "mosquitto.log"
        mosq.start()
        services.append(mosq)
        db = Influxd(work / "influxd", data_dir=sd / "influxdb", data_settings=influx_settings(pi["influxd"], speed, full_cold_s=2),
                     monitor_store_interval=duration(10 / speed) if pi["influxd"]["monitor-store-enabled"] else None,
                     http_log=True)  # requests per day, by kind (the log is not on the measured filesystem)
        db.log = logs / "influxd.log"
        db.start(timeout=60)
        services.append(db)
        db.create_database(DB)
        # the simulated live window ends at the wall clock's now; history (9 days) before it
        sim_hours_ns = int(hours * 3600e9)
        live_start_ns = (time.time_ns() - sim_hours_ns) // SLOT_NS * SLOT_NS
        slots = scenario.simulate(SEED_START, 11)
        shift = live_start_ns - 9 * 96 * SLOT_NS - int(SEED_START.timestamp() * 1e9)
        devices = Devices(spec, slots, shift)
        anchor = work / "anchor"
        api_port = free_port()
        cfg = agent_config(work / "agent.toml", sd / "agent", logs / "agent.log", mosq.port, db.url, api_port,
                           keys.public_text, speed, pi)
        agent = subprocess.Popen([sys.executable, "-m", "tools.benchmarks.wear_agent", str(cfg), str(speed),
                                  str(live_start_ns / 1e9), str(anchor)], cwd=ROOT,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        procs.append(agent)
        client = AgentClient(f"http://127.0.0.1:{api_port}", TOKEN)
        wait_for_api(client, 60)
        history = [{**s, "time": datetime.fromtimestamp(s["time"].timestamp() + shift / 1e9, UTC)}
                   for s in slots if int(s["time"].timestamp() * 1e9) + shift <= live_start_ns]
        pub = Publisher("127.0.0.1", mosq.port, client_id="bench-wear-history")
        n_history = pub.publish_all(scenario.messages(history))
        pub.close()
        say(f"{spec.name}: {n_history} history messages; the flow computes 9 days …")
        wait_until(lambda: (r := query(db, 'SELECT count("house") FROM "energy_flow"'))
                   and r[0]["values"][0][1] >= 9 * 96 - 8, 600, "the flow did not compute the history")
        signed = work / "signed"
        for name in ("cnn-1", "lstm-1", "cnn-96", "lstm-96"):
            shutil.copytree(bundles / name, signed / name)
            signing.sign_bundle_dir(signed / name, keys)
            client.push(signed / name)
        say(f"{spec.name}: bundles pushed; influxd compacts the history, then restarts with the Pi's settings")
        settle(db.proc.pid)
        db.stop()
        db.data_settings = influx_settings(pi["influxd"], speed)
        db.start(timeout=120)
        time.sleep(3)  # the agent reconnects; what it spooled meanwhile drains
        # -- the measured window -------------------------------------------------------------------------------
        pids = {"agent": agent.pid, "influxd": db.proc.pid, "mosquitto": mosq.proc.pid}
        io0 = {k: proc_write_bytes(p) for k, p in pids.items()}
        logs0 = {p.name: p.stat().st_size for p in logs.iterdir()}
        size0 = dir_bytes(sd / "influxdb")
        dev0 = fs.written()
        syncs = {k: SyncCounter(p, work / f"strace-{k}.txt") for k, p in pids.items()} if shutil.which("strace") else {}
        counters0 = agent_counters(db)
        log0_influxd = (logs / "influxd.log").stat().st_size
        anchor.write_text(str(time.time()))
        live = Live(devices, mosq.port, live_start_ns, speed)
        live.start()
        wall = hours * 3600 / speed
        say(f"{spec.name}: live, {hours} simulated hours in {wall / 60:.1f} minutes ({speed:g}×)")
        end = time.monotonic() + wall
        while (left := end - time.monotonic()) > 0 and live.error is None:
            time.sleep(min(30.0, left))
        if live.error:
            raise live.error
        live.stop.set()
        live.join(120)
        sent = dict(live.sent)
        # what was acknowledged by the broker is in the agent's hands: wait for it in the database
        stored: dict[int, int] = {}

        def all_stored() -> bool:
            for d in range(spec.devices):
                rows = query(db, f'SELECT count("Power") FROM {device_filter(d)} AND time >= {live_start_ns}')
                stored[d] = rows[0]["values"][0][1] if rows else 0
            return all(stored.get(d, 0) >= sent.get(d, 0) for d in range(spec.devices))

        with contextlib.suppress(TimeoutError):
            wait_until(all_stored, 300, "not all readings stored", interval=2)
        io1 = {k: proc_write_bytes(p) for k, p in pids.items()}
        requests = http_requests(logs / "influxd.log", log0_influxd)
        fsyncs = {k: c.stop() for k, c in syncs.items()}
        logs1 = {p.name: p.stat().st_size for p in logs.iterdir()}
        dev1 = fs.written()
        counters = {k: v - (counters0.get(k) or 0) if k != "bytes_written_per_day" else v
                    for k, v in agent_counters(db).items() if isinstance(v, int | float)}
        for p in procs:
            p.terminate()
            p.wait(60)
        procs.clear()
        # after compaction: a full compaction forced now (1 s cold), as the weekly one does to a cold shard
        db.stop()
        db.data_settings = influx_settings(pi["influxd"], speed, full_cold_s=1)
        db.start(timeout=120)
        time.sleep(3)
        settle(db.proc.pid)
        size1 = dir_bytes(sd / "influxdb")
        db.stop()
        mosq.stop()
        per_day = 24 / hours
        mb = 1e6
        db_mb_per_day = (size1 - size0) / mb * per_day
        per_process = {k: round((io1[k] - io0[k]) / mb * per_day, 2) for k in pids}
        per_process["ext4_journal_and_metadata"] = round((dev1 - dev0) / mb * per_day - sum(per_process.values()), 2)
        per_process["weekly_full_compaction"] = round(db_mb_per_day, 2)
        result = {
            "writes_mb_per_day": round((dev1 - dev0) / mb * per_day + db_mb_per_day, 1),
            "db_mb_per_year": round(db_mb_per_day * 365, 1),
            "lost": sum(max(0, sent.get(d, 0) - stored.get(d, 0)) for d in range(spec.devices)),
            "per_process": per_process,
            "log_mb_per_day": {k.removesuffix(".log"): round((logs1.get(k, 0) - logs0.get(k, 0)) / mb * per_day, 3)
                               for k in logs1 if k != "influxd.log"},  # influxd's HTTP log is on for the count
            "readings_per_day": round(sum(sent.values()) * per_day),
            "fsyncs_per_day": {k: round(v * per_day) for k, v in fsyncs.items() if v is not None},
            "influxd_requests_per_day": {k: round(v * per_day) for k, v in requests.items()},
            "fsyncs_per_day_by_file": {k: {p: round(n * per_day) for p, n in sorted(c.by_path.items(),
                                                                                    key=lambda x: -x[1])[:8]}
                                       for k, c in syncs.items()},
            "simulated_hours": hours, "speed": speed, "wall_minutes": round(wall / 60, 1),
            "agent_counters_per_day": {k: round(v * per_day) for k, v in counters.items()
                                       if k != "bytes_written_per_day"},
        }
        if isinstance(counters.get("bytes_written_per_day"), int | float):
            # the agent's own figure runs on the wall clock: per simulated day it is that divided by the speed
            result["agent_reported_mb_per_day"] = round(counters["bytes_written_per_day"] / speed / mb, 2)
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for svc in services:
            svc.stop()
        fs.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=6.0, help="simulated hours per house (scaled to a day)")
    ap.add_argument("--speed", type=float, default=24.0, help="simulated seconds per wall-clock second")
    ap.add_argument("--houses", nargs="+", default=list(HOUSES), choices=list(HOUSES))
    ap.add_argument("--bundles", type=Path, help="bundle directory (default: quick-trained, cached in build/)")
    ap.add_argument("--variant", default="shipped", choices=list(VARIANTS),
                    help="one setting changed from what is shipped (the comparisons in docs/pi.md)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-wear mounts an ext4 image through a loop device: run it as root")
    tmp = Path(tempfile.mkdtemp(prefix="bench-wear-"))
    try:
        bundles = bundles_dir(args.bundles, tmp)
        out: dict = {"houses": {}}
        for name in args.houses:
            result = run_house(HOUSES[name], args.hours, args.speed, bundles, tmp, settings(args.variant))
            say(f"{name} ({args.variant}): {json.dumps(result)}")  # the details: fsyncs, requests, logs, counters
            out["houses"][name] = {k: result[k] for k in ("writes_mb_per_day", "db_mb_per_year", "lost",
                                                          "per_process")}
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
