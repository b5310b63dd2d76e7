"""`make bench-server`: gunicorn with ≥100 registered versions; 50 concurrent clients for 20 s from a separate
process on the status and model-list routes. Last line: one JSON object."""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


TOKEN = "bench-server-token-0123456789"
CSV = ROOT / "data" / "seed_house" / "raw_data.csv"


def load(port: int, clients: int, seconds: float) -> dict:
    """The load generator (runs in its own process)."""
    paths = ["/api/v1/status", "/api/v1/models?limit=100"]
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        k = i
        while time.monotonic() < stop:
            path = paths[k % 2]
            k += 1
            t = time.perf_counter()
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                lat.append((time.perf_counter() - t) * 1000)
                errors += 0 if ok else 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q = statistics.quantiles(lat, n=100)
    return {"clients": clients, "requests": len(lat), "errors": errors, "p50_ms": round(q[49], 1),
            "p95_ms": round(q[94], 1), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--versions", type=int, default=100)
    args = ap.parse_args()
    if args.load:
        print(json.dumps(load(args.load, args.clients, args.seconds)))
        return

    from werkzeug.security import generate_password_hash

    from server.db import Database
    from server.registry import Registry
    from shared import manifest as mf
    from shared import signing
    from tools.services import Gunicorn

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp_s:
        tmp = Path(tmp_s)
        print("training one quick set of bundles …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "training", "train", "--data", str(CSV), "--until",
                        "2023-04-01T00:00:00Z", "--out", str(tmp / "b"), "--quick"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        data = tmp / "server"
        data.mkdir()
        db = Database(data / "server.sqlite")
        reg = Registry(data / "registry", db, signing.load_or_create_keypair(data / "keys" / "signing.key"))
        names = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
        for k in range(-(-args.versions // 4)):
            for name in names:
                d = tmp / "v" / f"{name}-{k}"
                shutil.copytree(tmp / "b" / name, d)
                doc = json.loads((d / mf.MANIFEST_FILE).read_text())
                doc["version"] = f"2026{1 + k // 28:02d}{1 + k % 28:02d}T000000Z"
                (d / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))
                reg.add(d)
        n_versions = db.one("SELECT count(*) AS n FROM versions")["n"]
        with Gunicorn(tmp / "g", generate_password_hash("bench"), TOKEN, data_dir=data, workers=4,
                      extra_env={"SERVER_JOB_WORKER": "0"}) as server:
            r = subprocess.run([sys.executable, __file__, "--load", str(server.port), "--clients", str(args.clients),
                                "--seconds", str(args.seconds)], capture_output=True, text=True, check=True)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    result["versions"] = n_versions
    print(json.dumps(result))


if __name__ == "__main__":
    main()
