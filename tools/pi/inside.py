"""What runs inside an arm64 root, with the venv where `home_energy-*.whl[edge]` was installed.

Standalone: it imports only the installed package (shared/, edge_agent/) and numpy, never tools/ or TensorFlow.
`python inside.py forecast --bundles DIR --csv FILE --issue ISO …` loads every bundle with the interpreter the agent
picks (`shared.interpreter.runtime()`) through the agent's inference code (`shared.inference.LoadedModel`), forecasts
at each issue time from the real meter data, times `run` and prints one JSON line. The host runs the same function
with its own interpreter (tools/pi/check.py) and compares the forecasts.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import sys
import time
from pathlib import Path

NAMES = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")


def forecasts(bundles: Path, csv: Path, issues: list[str], runs: int = 0, preferred: str | None = None) -> dict:
    import numpy as np

    from shared.inference import LoadedModel
    from shared.interpreter import runtime
    from shared.series import counter_to_slots, parse_time_ns, read_csv

    rt = runtime(preferred)
    series = counter_to_slots(read_csv(csv))
    out: dict = {"interpreter": {"name": rt.name, "version": rt.version}, "models": {}}
    for name in NAMES:
        t = time.perf_counter()
        model = LoadedModel.from_dir(bundles / name, rt)
        load_ms = (time.perf_counter() - t) * 1000
        entry: dict = {"load_ms": round(load_ms, 1), "output_scale": model.manifest["output"].get("scale"),
                       "forecasts": {}}
        for issue in issues:
            fc = model.predict(series, parse_time_ns(issue))
            entry["forecasts"][issue] = {"values": [float(v) for v in np.ravel(fc.values)], "complete": fc.complete}
        if runs:
            x = np.zeros((1, model.spec.steps, model.spec.n_features), np.float32)
            model.run(x)
            times = []
            for _ in range(runs):
                t = time.perf_counter_ns()
                model.run(x)
                times.append(time.perf_counter_ns() - t)
            entry["run_us_median"] = round(statistics.median(times) / 1000, 1)
        out["models"][name] = entry
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forecast")
    f.add_argument("--bundles", type=Path, required=True)
    f.add_argument("--csv", type=Path, required=True)
    f.add_argument("--issue", action="append", required=True)
    f.add_argument("--runs", type=int, default=30)
    f.add_argument("--interpreter", help="a distribution name from shared.interpreter.CANDIDATES")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    doc = forecasts(args.bundles, args.csv, args.issue, args.runs, args.interpreter)
    doc.update(seconds=round(time.perf_counter() - t, 1), machine=platform.machine(),
               python=platform.python_version(),
               wheels={d.metadata["Name"]: d.version for d in importlib.metadata.distributions()})
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
