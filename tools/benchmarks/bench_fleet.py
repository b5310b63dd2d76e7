"""`make bench-fleet`: quick training of N synthetic houses on a Ray cluster of W nodes on this machine, through the
real server (gunicorn + its job worker as the Ray driver).

For W in --nodes (raylets on loopback started with `ray start`, 1 CPU each; the head is one of them) and N in
--houses: N houses (tools/houses.py, 60 days each, uploaded as CSV) are registered and trained at once
(`quick`, 1 CPU per task). Per (N, W): houses per hour (N / wall time from the first request to the last job done),
seconds per house (the mean task time the job table records), the peak memory of a training task (its training
process's max RSS), and the p95 of the overview page (GET /, logged in, 100 requests) with the N houses registered.
Before the result: the overview's p95 with 1,000 houses registered (rows written straight into the database), and
what an embedded Ray adds to the job worker (start seconds, memory of its processes).
Last line: {"rows": [{"houses", "worker_nodes", "houses_per_hour", "seconds_per_house", "peak_task_mb",
"overview_p95_ms"}, …]}
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from werkzeug.security import generate_password_hash

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-fleet-token-0123456789"
PASSWORD = "bench-fleet"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLAIN_HTTP = "session_cookie_secure = false\n"  # the server runs on loopback without TLS: cookies without Secure


def say(msg: str) -> None:
    print(f"[bench-fleet] {msg}", file=sys.stderr, flush=True)


def login(base: str) -> requests.Session:
    import re

    s = requests.Session()
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', s.get(f"{base}/login", timeout=30).text).group(1)
    r = s.post(f"{base}/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf}, timeout=30,
               allow_redirects=False)
    r.raise_for_status()
    return s


def overview_p95(base: str, requests_n: int = 100) -> float:
    s = login(base)
    s.get(f"{base}/", timeout=60).raise_for_status()  # warm
    lat = []
    for _ in range(requests_n):
        t = time.perf_counter()
        r = s.get(f"{base}/", timeout=60)
        lat.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return round(statistics.quantiles(lat, n=100)[94], 1)


def run(n_houses: int, nodes: int, work: Path, timeout_s: float) -> dict:
    """One (N, W) row: a fresh cluster and server."""
    from tools.houses import houses, readings, write_csv
    from tools.raycluster import RayCluster
    from tools.services import Gunicorn

    data = work / "csv"
    data.mkdir(parents=True)
    end = datetime.now(UTC)
    files = [write_csv(readings(h, end, 60), data / f"{h.name}.csv") for h in houses(n_houses, seed=11)]
    with RayCluster(work / "ray", nodes=nodes, cpus_per_node=1) as cluster:
        extra = (f'{PLAIN_HTTP}training_data_dirs = ["{data}"]\nstatus_poll_s = 3600\n[jobs]\n'
                 f'ray_address = "{cluster.address}"\ncpus_per_job = 1\nskill_poll_s = 0\n')
        with Gunicorn(work / "g", generate_password_hash(PASSWORD), TOKEN, workers=2, extra_config=extra,
                      extra_env={**cluster.env, "SERVER_JOB_WORKER": "1"}) as server:
            base = server.url
            ids = []
            for k, f in enumerate(files):
                r = requests.post(f"{base}/api/v1/nodes", headers=AUTH, timeout=60, json={
                    "name": f"house-{k + 1}", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20})
                r.raise_for_status()
                ids.append((r.json()["id"], f))
            t0 = time.monotonic()
            jobs = [requests.post(f"{base}/api/v1/nodes/{nid}/train", headers=AUTH, timeout=60,
                                  json={"data": [str(f)], "quick": True}).json()["id"] for nid, f in ids]
            deadline = t0 + timeout_s
            while True:
                rows = [requests.get(f"{base}/api/v1/jobs/{j}", headers=AUTH, timeout=60).json() for j in jobs]
                if all(r["state"] not in ("queued", "running") for r in rows):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"N={n_houses} W={nodes}: not done within {timeout_s} s")
                time.sleep(2)
            wall = time.monotonic() - t0
            failed = [(r["id"], r["error"]) for r in rows if r["state"] != "done"]
            if failed:
                raise RuntimeError(f"N={n_houses} W={nodes}: jobs failed: {failed}")
            seconds = [r["result"]["ran_on"]["seconds"] for r in rows]
            p95 = overview_p95(base)
    row = {"houses": n_houses, "worker_nodes": nodes, "houses_per_hour": round(n_houses / wall * 3600, 1),
           "seconds_per_house": round(statistics.mean(seconds), 1),
           "peak_task_mb": round(max(r["peak_mb"] for r in rows), 1), "overview_p95_ms": p95}
    say(json.dumps(row | {"wall_s": round(wall, 1), "ray_nodes_used": len({r["ray_node"] for r in rows})}))
    return row


def overview_at(n: int, work: Path) -> float:
    """The overview's p95 with `n` houses registered (status, a training, a push each: written straight into the
    database, no agents)."""
    from server.db import Database
    from tools.services import Gunicorn

    data = work / "server"
    data.mkdir(parents=True)
    db = Database(data / "server.sqlite")
    status = {"reachable": True, "agent_version": "0.2.0", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"},
              "models": {b: {"active": {"version": "20261101T000000Z", "sha256": f"{k:064x}",
                                        "activated_at": "2026-11-01T00:00:00Z"}, "previous": None}
                         for k, b in enumerate(("cnn-1", "lstm-1", "cnn-96", "lstm-96"))},
              "last_forecast": None, "counters": {}}
    for k in range(n):
        nid = db.add_node(f"house-{k:04d}", "http://127.0.0.1:9", "t" * 20, {}, 1)
        db.set_node_status(nid, status if k % 10 else {"reachable": False, "error": "down", "code": "unreachable"})
        jid = db.add_job(nid, "train", {})
        db.job_update(jid, state="done" if k % 7 else "failed", finished=time.time(), result=json.dumps({}))
        db.add_push(nid, "cnn-1", "20261101T000000Z", bool(k % 5), "active", "ok")
    with Gunicorn(work / "g", generate_password_hash(PASSWORD), TOKEN, data_dir=data, workers=2,
                  extra_config=PLAIN_HTTP + "status_poll_s = 86400\n", extra_env={"SERVER_JOB_WORKER": "0"}) as server:
        return overview_p95(server.url, 50)


def ray_cost(work: Path) -> dict:
    """What an embedded Ray adds to the job worker: the start time and the memory of its processes (in a child
    process, so that this one's Ray state does not count)."""
    code = f"""
import json, os, time, psutil
from pathlib import Path
from server.cluster import Cluster
from server.config import JobsConfig
me = psutil.Process()
before = me.memory_info().rss
c = Cluster(JobsConfig(embedded_cpus=2), Path({str(work)!r}))
t0 = time.monotonic(); c.ensure(); start = time.monotonic() - t0
time.sleep(5)
procs = [me] + me.children(recursive=True)
rss = sum(p.memory_info().rss for p in procs if p.is_running())
print(json.dumps({{"ray_start_s": round(start, 1), "ray_processes": len(procs) - 1,
                   "ray_added_mb": round((rss - before) / 2**20), "driver_added_mb": round((me.memory_info().rss - before) / 2**20)}}))
c.shutdown()
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        return {"error": r.stderr[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.benchmarks.bench_fleet")
    ap.add_argument("--houses", default="1,2,4,8", help="comma-separated N")
    ap.add_argument("--nodes", default="1,2", help="comma-separated W (raylets of 1 CPU, the head included)")
    ap.add_argument("--overview-houses", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=3600, help="per row, seconds")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp_s:
        tmp = Path(tmp_s)
        extra = {"ray": ray_cost(tmp / "ray-cost")}
        say(f"embedded Ray: {extra['ray']}")
        if args.overview_houses:
            extra["overview_p95_ms_at"] = {str(args.overview_houses): overview_at(args.overview_houses, tmp / "ov")}
            say(f"overview with {args.overview_houses} houses: p95 {extra['overview_p95_ms_at']} ms")
        for w in (int(x) for x in args.nodes.split(",")):
            for n in (int(x) for x in args.houses.split(",")):
                say(f"N={n} houses on W={w} nodes …")
                rows.append(run(n, w, tmp / f"n{n}-w{w}", args.timeout))
    print(json.dumps(extra))
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
