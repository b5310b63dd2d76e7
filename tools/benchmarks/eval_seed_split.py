"""`make eval-seed`: the README's accuracy table, reproduced through the acceptance CLI.

Trains the four bundles on the seed data before 2023-06-18T02:00Z, backtests each int8 bundle (and its float
reference model) walk-forward over the test period, evaluates against the baselines on the same slots, scores the
int8 forecasts again with score_independently.py (pandas only, no project code), and prints a Markdown table and,
as the last line, one JSON object. `--out DIR` keeps the bundles and CSVs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CSV = str(ROOT / "data" / "seed_house" / "raw_data.csv")
UNTIL, START, END = "2023-06-18T02:00:00Z", "2023-06-18T02:00:00Z", "2023-08-31T22:15:00Z"
NAMES = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
BASELINES = ("persistence", "same_slot_yesterday", "same_slot_last_week", "median_7_days")


def cli(*args: str, capture: bool = False) -> str:
    r = subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, check=True, text=True,
                       stdout=subprocess.PIPE if capture else None)
    return r.stdout if capture else ""


def evaluate(out: Path, name: str, which: str) -> dict:
    csv = out / f"{name}.{which}.csv"
    extra = ["--float-model", str(out / "float" / f"{name}.tflite")] if which == "float" else []
    cli("backtest", "--bundle", str(out / name), "--data", CSV, "--start", START, "--end", END, "--out", str(csv),
        *extra, capture=True)
    return json.loads(cli("evaluate", "--forecasts", str(csv), "--data", CSV, capture=True))


def table(results: dict) -> str:
    def cell(m: dict) -> str:
        return f"{m['rmse']:.4f} | {m['mae']:.4f}"

    rows = ["| forecaster | next slot RMSE | next slot MAE | day-ahead RMSE | day-ahead MAE |", "|---|---|---|---|---|"]
    base1, base96 = results["cnn-1"]["int8"]["baselines"], results["cnn-96"]["int8"]["baselines"]
    for b in BASELINES:
        rows.append(f"| {b.replace('_', ' ')} | {cell(base1[b])} | {cell(base96[b])} |")
    for kind in ("cnn", "lstm"):
        for which in ("float", "int8"):
            r1, r96 = results[f"{kind}-1"][which], results[f"{kind}-96"][which]
            rows.append(f"| {kind.upper()} {which} | {r1['model']['rmse']:.4f} "
                        f"({r1['model']['rmse'] / base1['persistence']['rmse']:.3f} × persistence) | "
                        f"{r1['model']['mae']:.4f} | {r96['model']['rmse']:.4f} | {r96['model']['mae']:.4f} "
                        f"({r96['model']['mae'] / base96['median_7_days']['mae']:.3f} × 7-day median) |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="keep bundles and forecasts here (default: a temporary directory)")
    ap.add_argument("--seed", type=int, default=42, help="training's base random seed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-seed-") as tmp:
        out = Path(args.out or tmp)
        cli("train", "--data", CSV, "--until", UNTIL, "--out", str(out), "--seed", str(args.seed))
        results = {n: {w: evaluate(out, n, w) for w in ("int8", "float")} for n in NAMES}
        scorer = Path(__file__).with_name("score_independently.py")
        independent = json.loads(subprocess.run(
            [sys.executable, str(scorer), CSV, *(str(out / f"{n}.int8.csv") for n in NAMES)],
            check=True, text=True, stdout=subprocess.PIPE).stdout)
    print(table(results))
    summary = {n: {"int8_rmse": r["int8"]["model"]["rmse"], "int8_mae": r["int8"]["model"]["mae"],
                   "float_mae": r["float"]["model"]["mae"],
                   "int8_vs_float_mae": round(r["int8"]["model"]["mae"] / r["float"]["model"]["mae"] - 1, 4),
                   "slots": r["int8"]["slots"]} for n, r in results.items()}
    independent = {n: independent[str(out / f"{n}.int8.csv")] for n in NAMES}
    for n in ("cnn-1", "lstm-1"):
        summary[n]["rmse_vs_persistence"] = round(
            results[n]["int8"]["model"]["rmse"] / results[n]["int8"]["baselines"]["persistence"]["rmse"], 4)
        summary[n]["independent_rmse_vs_persistence"] = independent[n]["persistence"]["rmse_ratio"]
    for n in NAMES:  # the P10-P90 band on the test period, next to the climatological band on the same slots
        band = results[n]["int8"].get("interval")
        if band:
            summary[n]["p10_p90"] = band["model"]
            summary[n]["climatology_p10_p90"] = band["climatology"]
            summary[n]["independent_p10_p90"] = independent[n].get("p10_p90")
    for n in ("cnn-96", "lstm-96"):
        summary[n]["mae_vs_median_7_days"] = round(
            results[n]["int8"]["model"]["mae"] / results[n]["int8"]["baselines"]["median_7_days"]["mae"], 4)
        summary[n]["independent_mae_vs_median_7_days"] = {
            k: independent[n][f"median_7_days_{k}"]["mae_ratio"] for k in ("strict", "nan_skip")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
