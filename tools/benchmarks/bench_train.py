"""`make bench-train`: train all four bundles on the full real year; print time, the training process's peak RSS,
bundle sizes and each int8 model's validation MAE gap to its float model (JSON last)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CSV = ROOT / "data" / "seed_house" / "raw_data.csv"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        load = os.getloadavg()[0]
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "training", "train", "--data", str(CSV), "--out", out], cwd=ROOT,
                       check=True)
        seconds = time.time() - t0
        sizes, per_bundle, gaps = {}, {}, {}
        for name in ("cnn-1", "lstm-1", "cnn-96", "lstm-96"):
            doc = json.loads((Path(out) / name / "manifest.json").read_text())
            sizes[name] = doc["model"]["bytes"]
            per_bundle[name] = doc["training"]["seconds"]
            gaps[name] = round(doc["metrics"]["int8_vs_float"]["mae_rel"], 4)
    print(json.dumps({"bundles": 4, "train_seconds": round(seconds, 1), "per_bundle_seconds": per_bundle,
                      "bundle_bytes": sizes, "max_bundle_kb": round(max(sizes.values()) / 1024, 1),
                      "int8_vs_float_mae_rel": gaps,
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                      "load_avg_before": round(load, 2)}))


if __name__ == "__main__":
    main()
