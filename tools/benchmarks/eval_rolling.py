"""`make eval-rolling`: robust day-ahead, proven on more than one split.

For each month (default every month of the seed year with at least two months of history before it, 2022-11 …
2023-08) and seed (default 42, 7, 123): train the four bundles on the
seed data before the month (`python -m training train --until <month start>`), backtest each int8 bundle over the
month through the edge's inference code (`python -m training backtest`), and score the forecasts with
score_independently.py (pandas only, no project code):
- next slot (cnn-1, lstm-1): RMSE relative to persistence's;
- day-ahead (cnn-96, lstm-96): MAE relative to the best of the same slot yesterday, last week and the 7-day
  median, on the slots all three know;
- P10-P90: the share of actual values inside the band (recalibrated on the backtest's own last week, as the
  edge does), and its width next to the climatological band's — as it is (it covers only ~0.70-0.75) and given
  the same recalibration (about 80 %: the comparison at equal coverage).
Targets: next slot ≤ 0.95 × persistence in every month; day-ahead (both bundles) ≤ 0.94 × the best baseline in
the mean over months and ≤ 0.96 in the worst month; coverage 80 ± 5 %.

The guard, replayed (guard_backtest.py, the edge's own Guard and skill Ledger): issue by issue the bundle is
judged on its scored slots of the last 7 days and the baseline it lost to is served while it is in the shadow —
the *served* forecast's MAE relative to the best baseline must be ≤ 1.01 in every month. The next-slot CNN's int8
residual is checked too: how often the forecast equals the last slot exactly, next to how often the float twin's
residual (backtested from DIR/float/cnn-1.tflite) lies within half an int8 output step of zero.

Prints a table per month and bundle kind, and ends with one JSON line (worst seed per cell; for coverage the month
and seed farthest from 80 %):
`{"months": {"2023-06": {"cnn-1": ratio, …}, …}, "seeds": [...], "bundles": {"cnn-96": {"mean": …, "worst": …,
"worst_month": …, "served_worst": …}, …}, "p10_p90_coverage": {"cnn-1": …, …}, "residual_zeros": {…}, …}`.

Each (seed, month) keeps its bundles, forecasts and scores under `--out` (default artefacts/eval-rolling);
`--resume` reuses the scores already there, so an interrupted run continues where it stopped; `--scored-only` trains
nothing and reports the cells scored so far (the others listed in "not_run"; "mean_per_seed" then tells the seeds'
means apart, as they may cover different months); `--rescore` reuses
the bundles already trained there and only backtests and scores again (seconds per cell). A full run trains
4 bundles × 10 months × 3 seeds (about 8-20 minutes per cell on a 2-core machine: 5-10 hours; run it niced and
with --resume).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CSV = str(ROOT / "data" / "seed_house" / "raw_data.csv")
MONTHS = ("2022-11", "2022-12", "2023-01", "2023-02", "2023-03", "2023-04", "2023-05", "2023-06", "2023-07",
          "2023-08")
SEEDS = (42, 7, 123)
NAMES = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
TARGET_RATIO, TARGET_COVERAGE, COVERAGE_TOLERANCE = 0.95, 0.80, 0.05
TARGET_DAY_MEAN, TARGET_DAY_WORST, TARGET_SERVED = 0.94, 0.96, 1.01


def month_bounds(month: str) -> tuple[str, str]:
    """ISO start of the month and of the next one."""
    year, mon = (int(x) for x in month.split("-"))
    nxt = f"{year + mon // 12}-{mon % 12 + 1:02d}"
    return f"{month}-01T00:00:00Z", f"{nxt}-01T00:00:00Z"


def cli(*args: str, log: Path | None = None) -> str:
    """`python -m training …`; its output is kept in `log`."""
    r = subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if log is not None:
        with open(log, "a") as f:
            f.write(r.stdout)
    if r.returncode != 0:
        raise RuntimeError(f"python -m training {args[0]} failed ({r.returncode}): {r.stdout[-2000:]}")
    return r.stdout


def run_cell(out: Path, month: str, seed: int, extra: list[str], backtest_extra: list[str],
             retrain: bool = True) -> dict:
    """Train before `month` with `seed` (unless `retrain` is False and the bundles are there), backtest the month,
    score independently; the scores per bundle."""
    start, end = month_bounds(month)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "training.log"
    t0 = time.time()
    before = out / "scores.json"
    if retrain or not all((out / n / "manifest.json").exists() for n in NAMES):
        cli("train", "--data", CSV, "--until", start, "--out", str(out), "--seed", str(seed), *extra, log=log)
        trained_s = time.time() - t0
    else:
        trained_s = json.loads(before.read_text())["train_seconds"] if before.exists() else None
    for name in NAMES:
        cli("backtest", "--bundle", str(out / name), "--data", CSV, "--start", start, "--end", end,
            "--out", str(out / f"{name}.csv"), *backtest_extra, log=log)
    scorer = Path(__file__).with_name("score_independently.py")
    scores = json.loads(subprocess.run([sys.executable, str(scorer), CSV, *(str(out / f"{n}.csv") for n in NAMES)],
                                       check=True, text=True, stdout=subprocess.PIPE).stdout)
    cell = {"train_seconds": round(trained_s, 1) if trained_s is not None else None}
    for name in NAMES:
        s = scores[str(out / f"{name}.csv")]
        ratio = s["persistence"]["rmse_ratio"] if name.endswith("-1") else s["day_ahead_best"]["mae_ratio"]
        cell[name] = {"ratio": ratio, "best_baseline": "persistence" if name.endswith("-1") else
                      s["day_ahead_best"]["baseline"], "p10_p90": s.get("p10_p90"),
                      "climatology_p10_p90": s.get("climatology_p10_p90"),
                      "climatology_recalibrated_p10_p90": s.get("climatology_recalibrated_p10_p90")}
    (out / "scores.json").write_text(json.dumps(cell, indent=2) + "\n")
    return cell


def served_cell(cell_dir: Path, series, backtest_extra: list[str]) -> dict:
    """The guard replayed on each bundle's backtest, and cnn-1's int8 residual zeros (with its float twin's
    backtest, run once); cached in served.json."""
    from tools.benchmarks.guard_backtest import residual_zeros, served

    cache = cell_dir / "served.json"
    if cache.exists():
        return json.loads(cache.read_text())
    doc = {name: served(cell_dir / f"{name}.csv", series) for name in NAMES}
    float_csv, float_model = cell_dir / "cnn-1-float.csv", cell_dir / "float" / "cnn-1.tflite"
    if not float_csv.exists() and float_model.exists():
        start, end = month_bounds(cell_dir.name)
        cli("backtest", "--bundle", str(cell_dir / "cnn-1"), "--data", CSV, "--start", start, "--end", end,
            "--out", str(float_csv), "--float-model", str(float_model), *backtest_extra, log=cell_dir / "training.log")
    manifest = json.loads((cell_dir / "cnn-1" / "manifest.json").read_text())
    doc["cnn-1 residual"] = residual_zeros(cell_dir / "cnn-1.csv", series, float_csv, manifest)
    cache.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def bundle_summary(results: dict, served_docs: dict, seeds: list[int], months: list[str]) -> dict:
    """Per bundle over every (month, seed) cell: the mean ratio, the worst and where; the served forecast's worst."""
    out = {}
    for n in NAMES:
        cells = [(m, s, results[str(s)][m][n]["ratio"]) for s in seeds for m in months if m in results.get(str(s), {})]
        if not cells:
            continue
        month_worst = {m: max(r for mm, _, r in cells if mm == m) for m in {c[0] for c in cells}}
        worst = max(cells, key=lambda c: c[2])
        doc = {"mean": round(float(np.mean([c[2] for c in cells])), 4),
               "mean_per_seed": {str(s): {"mean": round(float(np.mean(rs)), 4), "months": len(rs)}
                                 for s in seeds if (rs := [r for _, ss, r in cells if ss == s])},
               "mean_of_worst_seed": round(float(np.mean(list(month_worst.values()))), 4),
               "worst": worst[2], "worst_month": worst[0], "worst_seed": worst[1], "cells": len(cells)}
        srv = [(m, s, d[n]) for (s, m), d in served_docs.items() if n in d]
        if srv:
            w = max(srv, key=lambda c: c[2]["served_mae_ratio"])
            doc |= {"served_worst": w[2]["served_mae_ratio"], "served_worst_month": w[0],
                    "served_by_baseline_issues": sum(c[2]["served_by_baseline"] for c in srv),
                    "model_mae_ratio_worst": max(c[2]["model_mae_ratio"] for c in srv)}
        out[n] = doc
    return out


def all_months_table(results: dict, served_docs: dict, seeds: list[int], months: list[str]) -> str:
    """One row per month: each bundle's ratio per seed, and the served day-ahead forecasts' MAE × best baseline."""
    rows = ["| month | " + " | ".join(NAMES) + " | served cnn-96 / lstm-96 (× best baseline MAE) |",
            "|---" * (2 + len(NAMES)) + "|"]
    for m in months:
        cells = [results[str(s)][m] for s in seeds if m in results.get(str(s), {})]
        if not cells:
            continue
        ratios = [per_seed(results, seeds, m, n) for n in NAMES]
        srv = [d for (s, mm), d in served_docs.items() if mm == m]
        served = " / ".join(f"{max(d[n]['served_mae_ratio'] for d in srv):.3f}" for n in NAMES[2:]) if srv else "–"
        rows.append(f"| {m} | " + " | ".join(ratios) + f" | {served} |")
    return "\n".join(rows)


def table(results: dict, seeds: list[int], months: list[str]) -> str:
    rows = []
    for kind in ("next slot (RMSE × persistence)", "day-ahead (MAE × best of yesterday / last week / 7-day median)"):
        names = NAMES[:2] if kind.startswith("next") else NAMES[2:]
        rows += [f"\n{kind}", "| month | " + " | ".join(f"{n} (seeds {', '.join(map(str, seeds))})" for n in names)
                 + " | " + " | ".join(f"{n} P10-P90 coverage / width (climatology; recalibrated)" for n in names)
                 + " |",
                 "|---" * (1 + 2 * len(names)) + "|"]
        for month in months:
            cells = [results[str(s)][month] for s in seeds if month in results.get(str(s), {})]
            if not cells:
                continue
            ratios = [per_seed(results, seeds, month, n) for n in names]
            bands = []
            for n in names:
                parts = [f"{c[n]['p10_p90']['coverage']:.2f} / {c[n]['p10_p90']['width_kwh']:.3f} "
                         f"({c[n]['climatology_p10_p90']['coverage']:.2f} / "
                         f"{c[n]['climatology_p10_p90']['width_kwh']:.3f}{recalibrated(c[n])})"
                         for c in cells if c[n]["p10_p90"]]
                bands.append("; ".join(parts) or "–")
            rows.append(f"| {month} | " + " | ".join(ratios) + " | " + " | ".join(bands) + " |")
    return "\n".join(rows)


def per_seed(results: dict, seeds: list[int], month: str, name: str) -> str:
    """The month's ratios in the order of `seeds`, "–" where that seed's cell has not run."""
    return " / ".join(f"{results[str(s)][month][name]['ratio']:.3f}" if month in results.get(str(s), {}) else "–"
                      for s in seeds)


def recalibrated(cell: dict) -> str:
    r = cell.get("climatology_recalibrated_p10_p90")
    return f"; {r['coverage']:.2f} / {r['width_kwh']:.3f}" if r else ""


def summary(results: dict, seeds: list[int], months: list[str]) -> dict:
    """Worst seed per cell: the highest ratio; for coverage the value farthest from 80 %; for width the widest
    model band next to the narrowest climatological one, and `narrower_than_recalibrated_climatology`: whether
    the model's band was narrower than the recalibrated climatological band in every month and seed."""
    out: dict = {"months": {}, "seeds": seeds, "p10_p90_coverage": {}, "p10_p90_width_kwh": {},
                 "climatology_p10_p90_width_kwh": {}, "narrower_than_recalibrated_climatology": {}}
    for month in months:
        cells = [results[str(s)][month] for s in seeds if month in results.get(str(s), {})]
        if cells:
            out["months"][month] = {n: max(c[n]["ratio"] for c in cells) for n in NAMES}
    for n in NAMES:
        bands = [(results[str(s)][m][n]["p10_p90"], results[str(s)][m][n]["climatology_p10_p90"])
                 for s in seeds for m in months if m in results.get(str(s), {}) and results[str(s)][m][n]["p10_p90"]]
        if bands:
            out["p10_p90_coverage"][n] = max((b[0]["coverage"] for b in bands),
                                             key=lambda c: abs(c - TARGET_COVERAGE))
            out["p10_p90_width_kwh"][n] = round(max(b[0]["width_kwh"] for b in bands), 4)
            out["climatology_p10_p90_width_kwh"][n] = round(min(b[1]["width_kwh"] for b in bands), 4)
            recal = [(results[str(s)][m][n]["p10_p90"]["width_kwh"],
                      results[str(s)][m][n].get("climatology_recalibrated_p10_p90"))
                     for s in seeds for m in months if m in results.get(str(s), {}) and results[str(s)][m][n]["p10_p90"]]
            if all(r for _, r in recal):
                out["narrower_than_recalibrated_climatology"][n] = all(w < r["width_kwh"] for w, r in recal)
    next_ratios = [r for m in out["months"].values() for n, r in m.items() if n.endswith("-1")]
    covs = list(out["p10_p90_coverage"].values())
    out["next_slot_met"] = bool(next_ratios) and all(r <= TARGET_RATIO for r in next_ratios)
    out["all_coverage_met"] = bool(covs) and all(abs(c - TARGET_COVERAGE) <= COVERAGE_TOLERANCE for c in covs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "artefacts" / "eval-rolling"))
    ap.add_argument("--months", nargs="+", default=list(MONTHS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--resume", action="store_true", help="reuse scores already in --out")
    ap.add_argument("--rescore", action="store_true",
                    help="reuse the bundles already trained in --out: backtest and score again")
    ap.add_argument("--train-arg", action="append", default=[],
                    help="extra argument for `python -m training train` (repeatable, e.g. --train-arg=--holidays=DE)")
    ap.add_argument("--backtest-arg", action="append", default=[],
                    help="extra argument for `python -m training backtest` (e.g. --backtest-arg=--fixed-band)")
    ap.add_argument("--scored-only", action="store_true",
                    help="train nothing: report the cells already scored in --out and list the others as not run")
    ap.add_argument("--no-guard", action="store_true", help="skip the guard replay and the residual check")
    args = ap.parse_args()
    out = Path(args.out)
    results: dict[str, dict] = {}
    served_docs: dict[tuple[int, str], dict] = {}
    not_run = []
    for seed in args.seeds:
        for month in args.months:
            cell_dir = out / f"seed-{seed}" / month
            done = cell_dir / "scores.json"
            if args.scored_only and not done.exists():
                not_run.append(f"seed {seed} {month}")
                continue
            if (args.resume or args.scored_only) and done.exists():
                cell = json.loads(done.read_text())
            else:
                t0 = time.time()
                cell = run_cell(cell_dir, month, seed, args.train_arg, args.backtest_arg, retrain=not args.rescore)
                print(f"seed {seed} {month}: " + ", ".join(f"{n} {cell[n]['ratio']:.3f}" for n in NAMES)
                      + f" ({time.time() - t0:.0f} s)", flush=True)
            results.setdefault(str(seed), {})[month] = cell
            if not args.no_guard:
                served_docs[(seed, month)] = served_cell(cell_dir, seed_series(), args.backtest_arg)
    print(table(results, args.seeds, args.months))
    doc = summary(results, args.seeds, args.months)
    doc["bundles"] = bundle_summary(results, served_docs, args.seeds, args.months)
    doc["not_run"] = not_run
    day = [doc["bundles"][n] for n in NAMES[2:] if n in doc["bundles"]]
    doc["day_ahead_met"] = bool(day) and all(d["mean"] <= TARGET_DAY_MEAN and d["worst"] <= TARGET_DAY_WORST
                                             for d in day)
    doc["served_met"] = bool(served_docs) and all(d.get("served_worst", 0) <= TARGET_SERVED
                                                  for d in doc["bundles"].values())
    zeros = [d["cnn-1 residual"] for d in served_docs.values()]
    if zeros:
        doc["residual_zeros"] = {k: sum(z.get(k, 0) for z in zeros) for k in
                                 ("issues", "zero_residual", "float_within_half_step", "float_outside_int8_range")}
    print("\nall months (ratios per seed; served: the day-ahead forecast with the guard replayed, worst seed)")
    print(all_months_table(results, served_docs, args.seeds, args.months))
    print(json.dumps(doc))


_SERIES = None


def seed_series():
    global _SERIES
    if _SERIES is None:
        from training.data import load

        _SERIES = load([CSV])
    return _SERIES


if __name__ == "__main__":
    main()
