"""`make demo`: the whole system on this machine with the real year of data.

1. Starts Mosquitto and InfluxDB 1.x on free loopback ports (temporary directories).
2. Starts the workstation server (gunicorn) and the edge agent (ingest, energy flow, forecasts, model API), registers
   the agent as a node, and prints the login at once (also in WORKDIR/login.txt): the training can be watched on
   the house's page from the start. The agent's API token is in WORKDIR/agent-token, for `edge-agent models`.
3. Replays the real year (data/seed_house) as MQTT messages in the hackathon's format, shifted in time so that it
   ends at the latest 15-minute boundary (the house "lives" in the past year); then a simulated live meter keeps
   publishing (each slot repeats the consumption of the same slot one week earlier) so that forecasts have fresh data.
   Like a real meter, it never reports on a slot end: every reading of the year becomes two, 5-55 s before and
   after it (counters interpolated), and the live meter reports every minute at second 37. (Replaying the
   readings exactly on slot ends hid issue 18: nothing computed the newest slot until a boundary later.)
4. Through the server's API, twice: a **quick** training on the last 30 days (about a minute), pushed (the house has
   no model yet) and forecasting within two minutes of the start; then the **full** training on the year, which
   replaces the quick models through the promotion gate. Both hold back the last HOLD_BACK of data, so that the
   gate can compare them on days neither trained on (it needs two for day-ahead models; docs/server.md).
5. Prints what each model is worth in words, where to look, and a JSON summary as the last line (with
   `first_model_forecast_s`: seconds from the start to the first forecast an int8 model wrote). With --exit it stops
   by itself; otherwise it keeps running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared import verdict
from shared.schema import SLOT_NS
from shared.series import read_csv
from tools.publish import Publisher, counter_messages
from tools.services import Gunicorn, Influxd, Mosquitto, free_port, spawn_agent, wait_for_api

ROOT = Path(__file__).resolve().parents[1]

CSV = ROOT / "data" / "seed_house" / "raw_data.csv"
HOLD_BACK = timedelta(days=2, hours=2)  # both trainings end this long before now: the gate's unseen days
QUICK_DAYS = 30  # the quick training pulls this many days (it trains on the last few hundred issue times)


def say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def api(base: str, token: str, path: str, doc: dict | None = None, method: str | None = None) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(doc).encode() if doc is not None else None,
                                 method=method or ("POST" if doc is not None else "GET"),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


STALL_S = 1200  # a job whose progress has not moved for this long is given up (a busy machine is slow, not stuck)


def wait_job(base: str, token: str, job_id: int, label: str, stall_s: float = STALL_S) -> dict:
    """Poll a job, showing its progress on one line, until it ends; give up only when it stops moving."""
    last, moved = "", time.monotonic()
    while time.monotonic() - moved < stall_s:
        job = api(base, token, f"/api/v1/jobs/{job_id}")
        line = f"{label}: {job['percent']:5.1f} % {job['stage']}"
        if line != last:
            print(f"\r[demo] {line:<{max(100, len(last))}}", end="", file=sys.stderr, flush=True)
            last, moved = line, time.monotonic()
        if job["state"] not in ("queued", "running"):
            print(file=sys.stderr)
            if job["state"] != "done":
                raise RuntimeError(f"{label} {job['state']}: {job.get('error')}\n{job.get('log', '')[-2000:]}")
            return job
        time.sleep(0.5)
    raise TimeoutError(f"{label}: no progress for {stall_s:.0f} s")


def count(db: Influxd, measurement: str, field: str, where: str = "") -> int:
    res = db.query(f'SELECT count("{field}") FROM "{measurement}" {where}', db="energy")["results"][0]
    return res["series"][0]["values"][0][1] if "series" in res else 0


JITTER_S = (5.0, 55.0)


def jittered(times: list[int], values: list[float], seed: int = 1) -> list[tuple[datetime, float]]:
    """Each reading as two readings a meter could have sent, 5-55 s before and after it, with the counter
    interpolated from the neighbouring real readings (never on a slot end)."""
    rng = random.Random(seed)
    out = []
    for i in range(len(times)):
        for side in (-1, 1):
            j = i + side
            if not 0 <= j < len(times):
                continue
            dt = rng.uniform(*JITTER_S) * 1e9
            frac = dt / abs(times[j] - times[i])
            if frac >= 0.5:
                continue
            value = values[i] + (values[j] - values[i]) * frac
            out.append((datetime.fromtimestamp((times[i] + side * dt) / 1e9, UTC), round(value, 5)))
    out.sort(key=lambda r: r[0])
    return out


class LiveMeter(threading.Thread):
    """Keeps the meter going after the replay, like a real one: a reading every minute at second 37 (never on a
    slot end), the counter rising through each slot by the consumption of the same slot a week earlier."""

    def __init__(self, publisher: Publisher, times: list[int], values: list[float], start_ns: int):
        super().__init__(name="live-meter", daemon=True)
        self.pub, self.stop = publisher, threading.Event()
        self.slots = dict(zip(times, values, strict=True))  # counter at each slot end
        self.boundary, self.counter = start_ns, values[-1]  # the newest slot end and the counter there
        self.week = 7 * 96 * SLOT_NS

    def step_kwh(self, t: int) -> float:
        a, b = self.slots.get(t - self.week), self.slots.get(t - self.week - SLOT_NS)
        return (a - b) if a is not None and b is not None and 0 <= a - b < 5 else 0.3

    def value_at(self, t_ns: int) -> float:
        while t_ns > self.boundary + SLOT_NS:  # slots that ended: their counter is settled
            self.boundary += SLOT_NS
            self.counter += self.step_kwh(self.boundary)
            self.slots[self.boundary] = self.counter
        frac = (t_ns - self.boundary) / SLOT_NS
        return self.counter + self.step_kwh(self.boundary + SLOT_NS) * frac

    def run(self) -> None:
        t = (time.time_ns() // 60_000_000_000) * 60_000_000_000 + 37_000_000_000
        while not self.stop.is_set():
            if t < time.time_ns() - 1e9:
                t += 60_000_000_000
                continue
            if self.stop.wait(max(0.0, t / 1e9 - time.time())):
                return
            value = self.value_at(t)
            self.pub.publish_all(counter_messages([(datetime.fromtimestamp(t / 1e9, UTC), round(value, 5))]))
            t += 60_000_000_000


def agent_config(tmp: Path, broker: Mosquitto, db: Influxd, api_port: int, token_file: Path,
                 public_key: str) -> Path:
    """The agent's config. It forecasts from the meter itself (`source = "counter"`): in this one-meter house that
    is the house's consumption, and the first forecasts need not wait for the flow to recompute the replayed
    year (the flow still runs: energy_flow, the homeowner's view on the server)."""
    cfg = tmp / "agent.toml"
    cfg.write_text(f"""[agent]
state_dir = "{tmp / 'agent'}"
[mqtt]
port = {broker.port}
client_id = "demo-agent"
[storage]
url = "{db.url}"
database = "energy"
[spool]
batch_interval_s = 0.5
[health]
interval_s = 30
[logging]
file = "agent.log"
[flow]
delay_s = 45                      # the meter's first reading after a boundary comes 37 s after it
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = {{ device_id = "meter-1" }}
import_field = "EnergyIn"
[forecast]
source = "counter"
measurement = "EnergyMeter"
field = "EnergyIn"
tags = {{ device_id = "meter-1" }}
delay_s = 60                      # after the meter's first reading after the boundary (second 37)
[publish]
topic_prefix = "home-energy"
[api]
port = {api_port}
token_file = "{token_file}"
public_key = "{public_key}"
[[rules]]
topic = "hack/+device/+channel"
format = "seed_json"
""")
    return cfg


@dataclass
class Demo:
    """What the stages share: the temporary directory, the services, the agent and the credentials."""

    tmp: Path
    epochs: int
    password: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    agent_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    services: list = field(default_factory=list)  # started, stopped in reverse order
    broker: Mosquitto | None = None
    db: Influxd | None = None
    server: Gunicorn | None = None
    agent: subprocess.Popen | None = None
    api_port: int = 0
    cfg: Path | None = None
    live: LiveMeter | None = None
    node_id: int = 0

    @property
    def token_file(self) -> Path:
        return self.tmp / "agent-token"

    @property
    def login_file(self) -> Path:
        return self.tmp / "login.txt"

    @property
    def page(self) -> str:
        return f"{self.server.url}/nodes/{self.node_id}" if self.node_id else f"{self.server.url}/"

    def client(self):
        from shared.agent_client import AgentClient

        return AgentClient(f"http://127.0.0.1:{self.api_port}", self.agent_token)

    def stop(self) -> None:
        if self.live:
            self.live.stop.set()
        if self.agent:
            self.agent.terminate()
            self.agent.wait(30)
        for svc in reversed(self.services):
            svc.stop()


def start_services(d: Demo) -> None:
    """Steps 1-2: Mosquitto, influxd, the server (gunicorn) and the edge agent with its model API."""
    from werkzeug.security import generate_password_hash

    from shared import signing

    d.broker = Mosquitto(d.tmp / "mosquitto").start()
    d.services.append(d.broker)
    d.db = Influxd(d.tmp / "influxd").start()
    d.services.append(d.db)
    d.db.create_database("energy")
    say(f"mosquitto on 127.0.0.1:{d.broker.port}, influxd on {d.db.url}")
    keys = signing.load_or_create_keypair(d.tmp / "server" / "keys" / "signing.key")
    d.server = Gunicorn(d.tmp / "gunicorn", generate_password_hash(d.password), d.api_token,
                        data_dir=d.tmp / "server", workers=2,
                        extra_config=f"training_epochs = {d.epochs}\nstatus_poll_s = 10\n"
                                     f'[jobs]\nray_temp_dir = "{d.tmp / "ray"}"\n').start()  # Ray of its own
    d.services.append(d.server)
    say(f"server (gunicorn) on {d.server.url}")
    d.api_port = free_port()
    write_secret(d.token_file, d.agent_token)
    d.cfg = agent_config(d.tmp, d.broker, d.db, d.api_port, d.token_file, keys.public_text)
    d.agent = spawn_agent(d.cfg)
    wait_for_api(d.client())
    say(f"edge agent running, model API on 127.0.0.1:{d.api_port}")
    node = api(d.server.url, d.api_token, "/api/v1/nodes", {
        "name": "demo-pi", "api_url": f"http://127.0.0.1:{d.api_port}", "api_token": d.agent_token,
        "influx": {"version": 1, "url": d.db.url, "database": "energy", "measurement": "EnergyMeter",
                   "field": "EnergyIn", "tags": {"device_id": "meter-1"}}})
    d.node_id = node["id"]
    print_login(d)


def write_secret(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text + "\n")


def where_to_look(d: Demo) -> str:
    return (f"  House page:            {d.page}   user: admin   password: {d.password}\n"
            f"  Agent model API:       http://127.0.0.1:{d.api_port}/api/v1/status (Bearer token in {d.token_file}):\n"
            f"                         edge-agent models --url http://127.0.0.1:{d.api_port} "
            f"--token-file {d.token_file} status\n"
            f"  InfluxDB:              {d.db.url} (database energy: EnergyMeter, energy_flow, forecast, agent)\n"
            f"  MQTT:                  127.0.0.1:{d.broker.port} (forecasts retained on home-energy/forecast/#)\n")


def print_login(d: Demo) -> None:
    """As soon as the server runs: the login (also in login.txt in the work dir) and where to watch."""
    write_secret(d.login_file, where_to_look(d))
    print(f"\n[demo] watch the training at {d.page}  (user admin, password {d.password}; also in {d.login_file})\n"
          + where_to_look(d), file=sys.stderr, flush=True)


@dataclass
class Replay:
    times: list[int]  # the real readings' times, shifted to end at now_slot
    values: list[float]
    now_slot: int
    sent: int = 0
    ingested: int = 0
    flow_slots: int = 0

    @property
    def first(self) -> datetime:
        return datetime.fromtimestamp(self.times[0] / 1e9, UTC)


def replay_year(d: Demo) -> Replay:
    """Step 3: the real year as jittered MQTT readings ending now, counted into the database; then the live meter.
    (The energy flow recomputes the replayed year meanwhile: `wait_for_flow`.)"""
    rows = read_csv(CSV)
    now_slot = int(time.time() * 1e9) // SLOT_NS * SLOT_NS
    shift = now_slot - int(rows.times[-1])
    r = Replay([int(t) + shift for t in rows.times], rows.values.tolist(), now_slot)
    readings = jittered(r.times, r.values)
    say(f"replaying {len(r.times):,} real meter readings ({r.first:%Y-%m-%d} … now; shifted by "
        f"{timedelta(microseconds=shift // 1000).days} days) as {len(readings):,} MQTT messages: a real meter never "
        f"reports exactly on a slot end, so each reading is sent as two, {JITTER_S[0]:.0f}-{JITTER_S[1]:.0f} s "
        f"before and after it (the counter interpolated; the first and the last reading once)")
    pub = Publisher("127.0.0.1", d.broker.port, client_id="demo-replay", max_inflight=1000)

    def progress(n: int) -> None:
        print(f"\r[demo] replay: {n:6d}/{len(readings)} messages ({100 * n / len(readings):3.0f} %)", end="",
              file=sys.stderr, flush=True)

    t0 = time.monotonic()
    r.sent = pub.publish_all(counter_messages(readings), progress=progress)
    print(file=sys.stderr)
    deadline = time.monotonic() + 300
    while count(d.db, "EnergyMeter", "EnergyIn") < r.sent and time.monotonic() < deadline:
        time.sleep(0.5)
    r.ingested = count(d.db, "EnergyMeter", "EnergyIn")
    say(f"{r.ingested:,} of {r.sent:,} messages stored in {time.monotonic() - t0:.1f} s")
    d.live = LiveMeter(pub, r.times, r.values, now_slot)
    d.live.start()
    return r


def wait_for_flow(d: Demo, r: Replay, timeout: float = 300) -> None:
    """The flow recomputes the whole replayed year (late data): until it has caught up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r.flow_slots = count(d.db, "energy_flow", "house")
        if r.flow_slots >= len(r.times) - 300:
            break
        time.sleep(1)
    say(f"energy flow: {r.flow_slots:,} slots of house consumption")


def train(d: Demo, label: str, params: dict) -> dict:
    """Step 4, through the server's API: a training job of the node that pulls its own history (`pull_days`) and
    pushes through the gate; says what each model is worth and what was pushed. Returns the job's result."""
    base, token = d.server.url, d.api_token
    until = (datetime.now(UTC) - HOLD_BACK).strftime("%Y-%m-%dT%H:%M:%SZ")
    job = api(base, token, f"/api/v1/nodes/{d.node_id}/train",
              {"auto_push": True, "epochs": d.epochs, "until": until} | params)
    result = wait_job(base, token, job["id"], f"{label} training")["result"]
    say(f"{label} training: {result['pulled']['rows']:,} readings pulled, trained until {until}; "
        f"error against the best simple guess on the held-out validation days:")
    for line in verdict_lines(d, result):
        say(f"  {line}")
    for p in result.get("pushes", []):
        say(f"  push {p.get('name')} {p.get('version')}: "
            f"{p.get('summary') or ('installed' if p.get('ok') else p.get('gate') or p.get('message'))}")
    return result


def verdict_lines(d: Demo, result: dict) -> list[str]:
    """One line per model in words: "next 15 min (cnn-1): 6 % better than the last 15 minutes repeated"."""
    lines = []
    for name, m in trained_metrics(d, result).items():
        text = verdict.in_words(m["int8_mae"] / m["baseline_mae"], m["best_baseline"])
        lines.append(f"{verdict.horizon_words(name.rsplit('-', 1)[1])} ({name}): {text}")
    return lines


class FirstForecast(threading.Thread):
    """Watches the database from the start for the first forecast an int8 model (cnn or lstm) wrote, so that
    `first_model_forecast_s` is when it was written (within the 0.25 s poll), not when the demo looked."""

    def __init__(self, d: Demo, t_start: float):
        super().__init__(name="first-forecast", daemon=True)
        self.d, self.t_start, self.seconds = d, t_start, None
        self.found, self.stop = threading.Event(), threading.Event()

    def run(self) -> None:
        where = "WHERE \"model\" = 'cnn' OR \"model\" = 'lstm'"
        while not self.stop.wait(0.25):
            try:
                if count(self.d.db, "forecast", "value_kwh", where):
                    self.seconds = round(time.time() - self.t_start, 1)
                    self.found.set()
                    return
            except Exception:  # influxd busy: try again
                continue

    def wait(self, timeout: float = 180) -> float | None:
        """Seconds from the demo's start to that first forecast; None when none came within `timeout`."""
        self.found.wait(timeout)
        self.stop.set()
        return self.seconds


def trained_metrics(d: Demo, result: dict) -> dict:
    """Per trained model: its held-out int8 errors against the best baseline, from the server's registry."""
    version = next(iter(result["versions"].values()))
    trained = {}
    for name in result["versions"]:
        row = api(d.server.url, d.api_token, f"/api/v1/models/{name}/{version}?node={d.node_id}")
        val = row["metrics"]["validation"]
        best = min(val["baselines"], key=lambda b: val["baselines"][b]["mae"])
        trained[name] = {"int8_rmse": round(val["int8"]["rmse"], 4), "int8_mae": round(val["int8"]["mae"], 4),
                         "best_baseline": best, "baseline_mae": round(val["baselines"][best]["mae"], 4),
                         "persistence_rmse": round(val["baselines"]["persistence"]["rmse"], 4),
                         "bytes": row["bytes"]}
    return trained


def pushed(result: dict) -> bool:
    return all(p.get("ok") for p in result.get("pushes", [])) and bool(result.get("pushes"))


def summarise(d: Demo, r: Replay, quick: dict, full: dict, first_s: float | None, t_start: float) -> dict:
    """Step 5: a forecast now, and the JSON summary (what was stored, trained, pushed and forecast, by whom)."""
    client = d.client()
    fc = client.forecast_now()
    say(f"forecast issued at {fc['issued_at']}: " + ", ".join(f"{f['name']} ({f['model']})"
                                                              for f in fc["forecasts"]))
    status = client.status()
    by_model = {}
    res = d.db.query('SELECT count("value_kwh") FROM "forecast" WHERE "issue" = \'rolling\' AND time > now() '
                     'GROUP BY "model"', db="energy")["results"][0]
    for series in res.get("series", []):
        by_model[series["tags"]["model"]] = series["values"][0][1]
    active = {n: (m["active"] or {}).get("version") for n, m in status["models"].items()}
    return {"ingested": r.ingested, "lost": r.sent - r.ingested, "flow_slots": r.flow_slots,
            "first_model_forecast_s": first_s,
            "quick": {"versions": quick["versions"], "pushed": pushed(quick)},
            "trained": trained_metrics(d, full),
            "pushed": pushed(full),
            "full_replaced_quick": all(active.get(n) == v for n, v in full["versions"].items()),
            "active_versions": active,
            "forecasts_written": count(d.db, "forecast", "value_kwh"),
            # the newest forecasts (targets after now) by who made them, and why a baseline was used if so
            "forecast_points_by_model": by_model,
            "forecast_cycles": {k: int(v) for k, v in status["counters"].items()
                                if k.startswith(("forecast_model_", "forecast_baseline_"))},
            "fallback_reasons": sorted({f.get("fallback") for f in fc["forecasts"] if f.get("fallback")}),
            "interpreter": f"{status['interpreter']['name']} {status['interpreter']['version']}",
            "seconds": round(time.time() - t_start, 1)}


def wait_for_stop() -> None:
    say("running — press Ctrl-C to stop")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exit", action="store_true", help="stop by itself when everything ran")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    t_start = time.time()
    d = Demo(Path(tempfile.mkdtemp(prefix="home-energy-demo-")), args.epochs)
    say(f"working directory {d.tmp}")
    try:
        start_services(d)
        first = FirstForecast(d, t_start)
        first.start()
        replay = replay_year(d)
        quick = train(d, "quick", {"quick": True, "pull_days": QUICK_DAYS})
        first_s = first.wait()
        say(f"first forecast by an int8 model {first_s} s after the start" if first_s is not None else
            "no int8 model has forecast yet (see the house page's Recent pushes)")
        days = (datetime.now(UTC) - replay.first).days + 2
        full = train(d, "full", {"pull_days": days})
        wait_for_flow(d, replay)
        summary = summarise(d, replay, quick, full, first_s, t_start)
        print(f"\n{where_to_look(d)}", file=sys.stderr)
        if not args.exit:
            wait_for_stop()
        print(json.dumps(summary))
        return 0
    finally:
        d.stop()
        if not args.keep:
            shutil.rmtree(d.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
