"""`make eval-holidays`: what the public-holiday input changes, on the real year's holidays.

For each month (default May 2023: Labour Day, Ascension, Whit Monday in Germany) trains the four bundles before the
month twice with the same seed — without and with `--holidays DE --timezone Europe/Berlin` — through
tools/benchmarks/eval_rolling.py (train, backtest through the edge's inference code, score independently), then
scores both on the month's holiday days and on its other days separately: MAE per 15-minute slot of the day-ahead
bundles' 00:00 UTC issue and of the next-slot bundles, in kWh, next to the 7-day median's MAE on the same slots.

The last line printed is one JSON object:
`{"holiday_dates": [...], "without": {"cnn-96": {"holiday_mae": …, "other_mae": …}, …}, "with": {…},
"median_7d": {"holiday_mae": …, "other_mae": …}}`.
Two full trainings per month: about 20 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from shared.calendar import holiday_dates
from shared.schema import DAY_NS
from shared.series import counter_to_slots, parse_time_ns, read_csv

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "data" / "seed_house" / "raw_data.csv"
NAMES = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
TZ = "Europe/Berlin"


def actual_by_slot() -> dict[int, float]:
    """kWh per slot (end time ns) from the meter's counter."""
    s = counter_to_slots(read_csv(str(CSV)))
    return {int(t): float(v) for t, v in zip(s.end_ns, s.values, strict=True) if np.isfinite(v)}


def local_date(t_ns: int) -> str:
    """The local date of the slot's middle (the calendar's rule)."""
    return datetime.fromtimestamp((t_ns - 450 * 10**9) / 1e9, UTC).astimezone(ZoneInfo(TZ)).date().isoformat()


def errors(path: Path, actual: dict[int, float], day_ahead: bool) -> list[tuple[str, float]]:
    """(local date, |forecast − actual|) for the day-ahead issue at 00:00 UTC or every next-slot forecast."""
    out = []
    with open(path) as f:
        for row in csv.DictReader(f):
            issued = parse_time_ns(row["issued_at"])
            if day_ahead and issued % DAY_NS:  # the backtest's day-ahead issue: 00:00 UTC
                continue
            t = parse_time_ns(row["target_time"])
            if t in actual:
                out.append((local_date(t), abs(float(row["value_kwh"]) - actual[t])))
    return out


def split_mae(errs: list[tuple[str, float]], holidays: set[str]) -> dict:
    h = [e for d, e in errs if d in holidays]
    o = [e for d, e in errs if d not in holidays]
    return {"holiday_mae": round(float(np.mean(h)), 4) if h else None, "holiday_slots": len(h),
            "other_mae": round(float(np.mean(o)), 4) if o else None, "other_slots": len(o)}


def median_7d(actual: dict[int, float], targets: list[int]) -> list[tuple[str, float]]:
    out = []
    for t in targets:
        past = [actual.get(t - k * DAY_NS) for k in range(1, 8)]
        if all(v is not None for v in past):
            out.append((local_date(t), abs(float(np.median(past)) - actual[t])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--months", nargs="+", default=["2023-05"])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(ROOT / "artefacts" / "eval-holidays"))
    args = ap.parse_args()
    out = Path(args.out)
    variants = {"without": [], "with": ["--train-arg=--holidays", "--train-arg=DE", "--train-arg=--timezone",
                                        f"--train-arg={TZ}"]}
    for variant, extra in variants.items():
        print(f"[eval-holidays] training and backtesting {variant} holidays …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "tools.benchmarks.eval_rolling", "--out", str(out / variant),
                        "--months", *args.months, "--seeds", str(args.seed), "--resume", *extra], cwd=ROOT,
                       check=True, stdout=sys.stderr)
    years = sorted({int(m[:4]) for m in args.months})
    hol = {d for d in holiday_dates("DE", None, years) if d[:7] in args.months}
    actual = actual_by_slot()
    result: dict = {"holiday_dates": sorted(hol), "months": args.months, "seed": args.seed}
    targets: list[int] = []
    for variant in variants:
        result[variant] = {}
        for name in NAMES:
            errs = []
            for month in args.months:
                path = out / variant / f"seed-{args.seed}" / month / f"{name}.csv"
                errs += errors(path, actual, name.endswith("-96"))
                if variant == "without" and name == "cnn-96":
                    with open(path) as f:
                        targets += [parse_time_ns(r["target_time"]) for r in csv.DictReader(f)]
            result[variant][name] = split_mae(errs, hol)
    result["median_7d"] = split_mae(median_7d(actual, sorted(set(targets))), hol)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
