"""`make bench-retention`: a year of the 20-device house, replayed fast, with the agent's retention on.

The house: a grid meter (import and export counters, power), a PV inverter (production counter, power), a battery
(charge and discharge counters, power, state of charge) and 17 plugs (counter, power), each reporting every second
at its own phase with the jitter of a receive time in ns (what the agent stamps on a message without a time).
Values are rounded as devices send them (0.1 W, 0.1 Wh).

Accelerated: lines are written straight into influxd (no MQTT: ingest has its own benchmarks) day by day, and the
agent — retention (the per-device aggregates), the flow and the forecast, in this process on a driven clock —
runs after each simulated day: the flow and the aggregates for every slot of it, the forecast every
`--forecast-every-h` simulated hours (default 6, midnight included: the day-ahead issue).
The year ends now; the raw policy's 90 days slide with the simulated time (its duration is set to "now − the
simulated day + 90 days" each day, and influxd's retention check runs every 10 s), so InfluxDB itself drops the
expired shard groups while the year goes by. Only the last `--full-rate-days` (default 91) are written at one reading
per second and device; before them every `--thin` s (default 30): those raw readings expire anyway, what stays of
them is their aggregates, which are computed from whatever raw readings there are. The size budget
(`--raw-max-mb`, default the shipped 1000 MB; 0: off) is checked after each simulated day's aggregates: the agent
drops the oldest raw shard groups (docs/pi.md "Retention"). Prints one JSON line: database size on disk (data +
wal, after influxd's cold compaction), influxd and agent RSS, points per policy, the raw policy's size (largest
after any day's check, and at the end), shards dropped, compaction errors from influxd's log, time taken.
influxd's memory is sampled a minute long after the cold compaction (median and largest VmRSS; its anonymous part
apart from the TSM file pages it maps); `--influxd-memory-mb N` runs influxd under a real memory limit (a cgroup,
as `MemoryMax=` would) and counts its OOM kills: the proof that it works within N MB, not only a sample.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tools.services import Influxd

DAY = 86400
DEVICES = ([("grid", "EnergyMeter", "grid")] + [("pv", "PvString", "pv")] + [("battery", "Battery", "bat")]
           + [("plug", "Plug", f"plug-{i:02d}") for i in range(17)])


class BenchInfluxd(Influxd):
    """The test influxd plus a fast retention check and cold compaction after a minute without writes."""

    def _command(self) -> list[str]:
        cmd = super()._command()
        conf = self.workdir / "influxdb.conf"
        text = conf.read_text().replace("[data]\n", '[data]\n  compact-full-write-cold-duration = "1m"\n'
                                        '  cache-snapshot-write-cold-duration = "1m"\n')
        conf.write_text(text + '[retention]\n  enabled = true\n  check-interval = "10s"\n')
        return cmd


def _lines(day_start: int, seconds: int, step: float, rng: np.random.Generator, state: dict) -> bytes:
    """One chunk of every device's readings from day_start (ns) for `seconds`, one per `step` s."""
    out = []
    n = int(seconds / step)
    for kind, measurement, dev in DEVICES:
        phase = state.setdefault(("phase", dev), rng.uniform(0, step))
        t = day_start + ((np.arange(n) * step + phase) * 1e9).astype(np.int64) + rng.integers(0, 30_000_000, n)
        hour = ((t // 10**9) % DAY) / 3600
        if kind == "pv":
            p = np.clip(4000 * np.sin(np.pi * (hour - 6) / 12), 0, None) * rng.uniform(0.9, 1.0, n)
        elif kind == "grid":
            p = 300 + 200 * rng.standard_normal(n)
        elif kind == "battery":
            p = 800 * np.sin(np.pi * hour / 12) + 50 * rng.standard_normal(n)
        else:
            p = np.abs(rng.choice([2.0, 60.0, 1200.0], p=[0.6, 0.35, 0.05]) + 5 * rng.standard_normal(n))
        p = np.round(p, 1)
        key = ("counter", dev)
        c0 = state.get(key, (rng.uniform(100, 5000), rng.uniform(0, 500)))
        cin = c0[0] + np.round(np.cumsum(np.clip(p, 0, None)) * step / 3.6e6, 4)
        cout = c0[1] + np.round(np.cumsum(np.clip(-p, 0, None)) * step / 3.6e6, 4)
        state[key] = (float(cin[-1]), float(cout[-1]))
        ts, ps, ci, co = t.tolist(), p.tolist(), cin.tolist(), cout.tolist()
        tags = f"{measurement},device_id={dev}"
        if kind == "grid" or kind == "battery":
            soc = "" if kind == "grid" else None
            for k in range(n):
                extra = f",Soc={50 + 40 * np.sin(k / 5000):.1f}" if soc is None else ""
                out.append(f"{tags} Power={ps[k]},EnergyIn={ci[k]:.4f},EnergyOut={co[k]:.4f}{extra} {ts[k]}")
        elif kind == "pv":
            out += [f"{tags} Power={ps[k]},EnergyOut={ci[k]:.4f} {ts[k]}" for k in range(n)]
        else:
            out += [f"{tags} Power={ps[k]},EnergyIn={ci[k]:.4f} {ts[k]}" for k in range(n)]
    return ("\n".join(out) + "\n").encode()


def _write(url: str, body: bytes) -> None:
    """POST ~4 MB at a time, cut at line ends."""
    start = 0
    while start < len(body):
        end = len(body) if start + (4 << 20) >= len(body) else body.index(b"\n", start + (4 << 20)) + 1
        req = urllib.request.Request(f"{url}/write?db=energy&precision=ns", data=body[start:end], method="POST")
        urllib.request.urlopen(req, timeout=300).read()
        start = end


def _generator(url: str, start: int, days: int, full_from: int, thin: float, go: mp.Queue, done: mp.Queue) -> None:
    """A child process: writes day d when told, then reports the values it wrote."""
    os.nice(5)
    rng = np.random.default_rng(7)
    state: dict = {}
    while (d := go.get()) is not None:
        if isinstance(d, tuple):  # ("live", seconds): the house in real time, written every 10 s
            live_end = time.monotonic() + d[1]
            last = time.time_ns() // 10**9 * 10**9
            while time.monotonic() < live_end:
                time.sleep(10)
                now = time.time_ns() // 10**9 * 10**9
                _write(url, _lines(last, (now - last) // 10**9, 1.0, rng, state))
                last = now
            done.put(("live", 0))
            continue
        day_start = start + d * DAY * 10**9
        step = 1.0 if d >= full_from else thin
        values = 0
        for h in range(24):
            body = _lines(day_start + h * 3600 * 10**9, 3600, step, rng, state)
            values += body.count(b"=")
            _write(url, body)
        done.put((d, values))
    done.put(None)


def _rss_mb(pid: int, kind: str = "VmRSS") -> float:
    """A process's resident memory in MB: all of it (VmRSS), or its anonymous part (RssAnon: heap, what only the
    process can hold) or the file pages it maps (RssFile: influxd maps its TSM files; the kernel takes those back
    under pressure)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _rss_samples(pid: int, n: int = 12, every_s: float = 5.0) -> dict:
    """Median and largest of `n` samples of VmRSS and RssAnon: one sample of influxd's RSS is noisy (its Go heap
    grows and shrinks with each compaction and garbage collection)."""
    rss, anon = [], []
    for i in range(n):
        rss.append(_rss_mb(pid))
        anon.append(_rss_mb(pid, "RssAnon"))
        if i < n - 1:
            time.sleep(every_s)
    return {"influxd_rss_mb": float(np.median(rss)), "influxd_rss_max_mb": max(rss),
            "influxd_anon_mb": float(np.median(anon)), "influxd_file_mb": _rss_mb(pid, "RssFile")}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _config(path: Path, influx: Influxd, raw_days: int, raw_max_mb: float) -> Path:
    path.write_text(f"""
[agent]
state_dir = "{path.parent / 'state'}"
[mqtt]
port = 1
[storage]
url = "{influx.url}"
database = "energy"
[retention]
raw_days = {raw_days}
raw_max_mb = {raw_max_mb}
manage_policies = false
delay_s = 0
catchup_days = 2
[flow]
delay_s = 0
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = {{ device_id = "grid" }}
import_field = "EnergyIn"
export_field = "EnergyOut"
[[flow.devices]]
role = "pv"
measurement = "PvString"
tags = {{ device_id = "pv" }}
import_field = "EnergyOut"
[[flow.devices]]
role = "battery"
measurement = "Battery"
tags = {{ device_id = "bat" }}
import_field = "EnergyIn"
export_field = "EnergyOut"
[forecast]
measurement = "EnergyMeter"
field = "EnergyIn"
tags = {{ device_id = "grid" }}
delay_s = 0
away = false
[publish]
discovery = false
[[rules]]
topic = "x/+device"
format = "number"
measurement = "x"
field = "v"
""")
    return path


def _live_under_limit(args, influx: BenchInfluxd, gen_queues, clock: list, parts) -> dict:
    """After the year: influxd restarted on its data inside a memory cgroup of `--influxd-memory-mb` (as a unit's
    MemoryMax= would hold it on a Pi), the house written in real time for `--live-minutes`, the flow, the forecast
    and the retention run every minute against it. What a Pi's influxd then does, not the accelerated replay's
    bulk writes (a day written in a minute: 200-440 MB, docs/pi.md)."""
    from tools.cgroup import MemoryLimit

    go, done = gen_queues
    flow, forecast, retention = parts
    influx.stop()
    influx.limit = MemoryLimit(int(args.influxd_memory_mb * 2**20), "bench-influxd").__enter__()
    influx.wrap = influx.limit.command
    influx.start(timeout=120)
    print(f"influxd restarted under a {args.influxd_memory_mb:g} MB memory limit; {args.live_minutes} min of the "
          "house in real time …", file=sys.stderr, flush=True)
    go.put(("live", args.live_minutes * 60))
    errors, rss, anon = 0, [], []
    deadline = time.monotonic() + args.live_minutes * 60
    while time.monotonic() < deadline:
        clock[0] = time.time_ns()
        for part in (flow, forecast, retention):
            try:
                part.run_once(clock[0])
            except Exception as exc:  # counted: a database killed under the limit shows here
                errors += 1
                print(f"live: {type(part).__name__}: {exc}", file=sys.stderr, flush=True)
        if influx.proc.poll() is None:
            rss.append(_rss_mb(influx.proc.pid))
            anon.append(_rss_mb(influx.proc.pid, "RssAnon"))
        time.sleep(max(0.0, min(60.0, deadline - time.monotonic())))
    done.get(timeout=120)
    peak = influx.limit.peak_bytes()
    return {"live": {"memory_limit_mb": args.influxd_memory_mb, "minutes": args.live_minutes,
                     "oom_kills": influx.limit.oom_kills(), "influxd_alive": influx.proc.poll() is None,
                     "cgroup_peak_mb": round(peak / 2**20, 1) if peak else None,
                     "influxd_rss_max_mb": max(rss, default=None), "influxd_anon_max_mb": max(anon, default=None),
                     "component_errors": errors}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--full-rate-days", type=int, default=91)
    ap.add_argument("--thin", type=float, default=30.0, help="seconds between readings before the full-rate days")
    ap.add_argument("--raw-days", type=int, default=90)
    ap.add_argument("--raw-max-mb", type=float, default=1000.0, help="[retention] raw_max_mb (0: no size bound)")
    ap.add_argument("--forecast-every-h", type=int, default=6, help="a forecast cycle every N simulated hours")
    ap.add_argument("--keep", help="keep the work directory here")
    ap.add_argument("--influxd-memory-mb", type=float, default=0,
                    help="run influxd inside a memory cgroup of this size, as a unit's MemoryMax= would (0: none); "
                         "after the year influxd is restarted inside it and the house runs in real time for "
                         "--live-minutes; the result counts OOM kills and gives the cgroup's peak")
    ap.add_argument("--live-minutes", type=float, default=10)
    args = ap.parse_args()
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    t0 = time.monotonic()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-retention-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.influxd_memory_mb:
        from tools.cgroup import MemoryLimit

        if why := MemoryLimit.unavailable():
            raise SystemExit(f"--influxd-memory-mb: {why}")
    influx = BenchInfluxd(work / "influxd").start()
    influx.create_database("energy")
    now_ns = time.time_ns()
    end = now_ns // (DAY * 10**9) * DAY * 10**9
    start = end - args.days * DAY * 10**9
    # the policies as the influxdb role makes them; the raw one's duration then slides with the simulated time
    influx.query('CREATE RETENTION POLICY "keep" ON "energy" DURATION INF REPLICATION 1 SHARD DURATION 4368h',
                 method="POST")
    influx.query(f'ALTER RETENTION POLICY "autogen" ON "energy" DURATION {args.days * 24 + args.raw_days * 24}h '
                 'SHARD DURATION 168h', method="POST")
    clock = [start]
    (work / "agent").mkdir()
    cfg = load_config(_config(work / "agent" / "agent.toml", influx, args.raw_days, args.raw_max_mb))
    agent = Agent(cfg, clock=lambda: datetime.fromtimestamp(clock[0] / 1e9, UTC),
                  components=("retention", "flow", "forecast"))
    agent.ctx.publish = lambda *a, **k: None  # no broker here: MQTT out is not what this measures
    retention, flow, forecast = (agent.components[n] for n in ("retention", "flow", "forecast"))
    retention.start()
    go, done = mp.Queue(), mp.Queue()
    gen = mp.Process(target=_generator, args=(influx.url, start, args.days, args.days - args.full_rate_days,
                                              args.thin, go, done), daemon=True)
    gen.start()
    written = 0
    raw_peak = raw_before = 0  # the raw policy's size after / before each day's check
    go.put(0)
    for d in range(args.days):
        _, values = done.get()
        written += values
        if d + 1 < args.days:
            go.put(d + 1)  # the next day is generated while the agent works on this one
        # the raw policy slides with the simulated time: InfluxDB drops what is older than 90 simulated days
        sim_end = start + (d + 1) * DAY * 10**9
        hours = int((now_ns - sim_end) / 3.6e12) + args.raw_days * 24 + 1
        influx.query(f'ALTER RETENTION POLICY "autogen" ON "energy" DURATION {hours}h', method="POST")
        for h in range(args.forecast_every_h, 25, args.forecast_every_h):  # issue times, midnight included
            clock[0] = start + d * DAY * 10**9 + h * 3600 * 10**9
            forecast.run_once(clock[0])
        clock[0] = start + (d + 1) * DAY * 10**9
        flow.run_once(clock[0])  # the day's slots (the flow and the aggregates catch up like after an outage)
        while retention.run_once(clock[0]) and retention.until < clock[0]:
            pass
        raw_peak = max(raw_peak, int(retention.status()["raw_budget"].get("raw_bytes") or 0))
        raw_before = max(raw_before, int(retention.status()["raw_budget"].get("raw_bytes_before") or 0))
        if args.raw_max_mb and (d % 5 == 4 or d == args.days - 1):
            b = retention.status()["raw_budget"]
            print(f"day {d + 1}: raw {b.get('raw_mb')} MB (budget {args.raw_max_mb:g}), oldest raw "
                  f"{b.get('oldest_raw')}, {b.get('shards_dropped')} shards dropped, waiting: {b.get('pending')}",
                  file=sys.stderr, flush=True)
        if d % 30 == 29 or d == args.days - 1:
            print(f"day {d + 1}/{args.days}: {written / 1e6:.0f} M values, db {_du(work / 'influxd') / 1e6:.0f} MB, "
                  f"influxd {_rss_mb(influx.proc.pid)} MB, agent {_rss_mb(os.getpid())} MB, "
                  f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    policies = {}
    for rp in ("autogen", "keep"):
        res = influx.query(f'SELECT count(*) FROM "energy"."{rp}"./.*/', db="energy")["results"][0]
        policies[rp] = sum(max(v for v in s["values"][0][1:] if v is not None) for s in res.get("series", []))
    print("waiting for influxd's cold compaction (2 min) …", file=sys.stderr)
    time.sleep(130)
    agent_rss = _rss_mb(os.getpid())
    influxd_memory = _rss_samples(influx.proc.pid)
    if args.raw_max_mb:
        retention.enforce_budget(clock[0])  # measured again after the cold compaction
    raw_end = retention.status()["raw_budget"]
    result = {"days": args.days, "devices": len(DEVICES), "full_rate_days": args.full_rate_days,
              "thin_s": args.thin, "raw_days": args.raw_days, "values_written": written,
              "db_mb": round(_du(work / "influxd" / "data") / 1e6 + _du(work / "influxd" / "wal") / 1e6, 1),
              "db_data_mb": round(_du(work / "influxd" / "data") / 1e6, 1),
              **influxd_memory, "agent_rss_mb": agent_rss,
              "agent_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "raw_max_mb": args.raw_max_mb or None,
              "raw_mb_peak": round(raw_peak / 1e6, 1) if args.raw_max_mb else None,
              "raw_mb_peak_before_drop": round(raw_before / 1e6, 1) if args.raw_max_mb else None,
              "raw_mb_end": raw_end.get("raw_mb"), "raw_shards_dropped": int(agent.health.get("raw_shards_dropped")),
              "oldest_raw": raw_end.get("oldest_raw"),
              "points_raw_policy": policies["autogen"], "points_keep_policy": policies["keep"],
              "compaction_errors": len([ln for ln in influx.log.read_text(errors="replace").splitlines()
                                        if re.search(r"compact", ln, re.I) and re.search(r"error|fail", ln, re.I)]),
              "flow_slots": int(agent.health.get("flow_slots_written")),
              "aggregates_written": int(agent.health.get("slot_aggregates_written")),
              "seconds": round(time.monotonic() - t0, 1)}
    try:
        if args.influxd_memory_mb:
            result.update(_live_under_limit(args, influx, (go, done), clock, (flow, forecast, retention)))
    finally:  # a failed live run still stops influxd and removes its memory cgroup
        go.put(None)
        gen.join(60)
        for component in (forecast, flow, retention):
            component.stop()
        influx.stop()
        if getattr(influx, "limit", None) is not None:
            influx.limit.__exit__(None, None, None)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
