"""`make bench-restore`: back up a live agent and server, restore both into fresh instances, compare everything
(tools/restore_check.py); prints one JSON line. ARGS: --readings N (default 20,000 meter readings)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.restore_check import run

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "data" / "seed_house" / "raw_data.csv"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        bundles = Path(tmp) / "bundles"
        print("training quick bundles to push (about a minute) …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "training", "train", "--data", str(SEED), "--until",
                        "2023-05-10T00:00:00Z", "--out", str(bundles), "--quick"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        result = run(Path(tmp) / "work", bundles, args.readings, log=lambda *a: print(*a, file=sys.stderr))
    head = {k: result[k] for k in ("restored", "series_equal", "models_equal", "server_equal", "seconds")}
    print(json.dumps(head | {k: v for k, v in result.items() if k not in head}))
    return 0 if all(head[k] for k in ("restored", "series_equal", "models_equal", "server_equal")) else 1


if __name__ == "__main__":
    sys.exit(main())
