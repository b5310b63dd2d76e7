"""`make eval-heatpump`: what the outdoor temperature buys a day-ahead model, on a real heat pump (issue 26).

For each heating month (October-April) from --start to --end (default 2021-10 … 2022-12 of
data/heatpump_ch/smd_hp_2021_2022.csv, a Swiss heat pump's 15-minute kWh with the day's mean temperature): train
on everything before the month (`python -m training train --until <month> --temperature …`: the bundle without the
temperature and its weather twin, e.g. cnn-96 and cnn-96-weather), then backtest the month through the edge's
inference code (`python -m training backtest`, day-ahead issued at 00:00 UTC for the next 96 slots) three times:
the bundle without the temperature; the weather bundle given the observed daily temperature as its forecast; and
given the observed temperature + Gaussian noise per day (σ = --noise, 1.5 °C, fixed seed) — a realistic forecast
error. Scored on the days where every forecaster has all 96 slots and the actual day is complete:
- the MAE of the day's energy (the sum of the 96 slots), of hourly energy and of 15-minute slots;
- for the models with and without the temperature and for the temperature-blind baselines (the same slot
  yesterday, last week, its 7-day median and 7-day mean; the best of them by daily MAE is "best blind").
Targets (the noisy forecast): daily MAE ≤ 0.80 × the best blind baseline and ≤ 0.90 × the model without the
temperature; 15-minute MAE no worse than the 7-day median's.

The bound (no training, same days): a least-absolute-deviation linear model of the day's energy on yesterday's
energy, the 7-day mean, the forecast day's mean temperature (noisy, as the model saw it), yesterday's and the
last 7 days' mean temperature, fitted on the scored days themselves (in hindsight: generous) and walk-forward
(refitted before each month on all days before it) — what the daily inputs allow at all with that forecast error.

Prints a table, then one JSON line:
`{"overall": {"daily_mae_ratio_vs_best_blind": …, "daily_mae_ratio_vs_no_temp": …,
"hourly_mae_ratio_vs_best_blind": …, "slot_mae_ratio_vs_median7": …}, "months": {"2021-10": {…}, …},
"noise_sigma_c": 1.5}` ("overall": the noisy forecast, pooled over every scored day of every month; each month
also has the observed forecast's ratios, the MAEs and the bound). The report with everything is also written to
--out/report.json. `--resume` reuses months already scored in --out. Two trainings of cnn-96 per month: 7-25
minutes a month on a 2-core machine (the more history, the longer).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from shared import weather as wx
from shared.schema import DAY_NS, SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries, iso, parse_time_ns
from tools.benchmarks.eval_rolling import month_bounds
from training.data import read_local_slots
from training.weather import TemperatureForecasts

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "data" / "heatpump_ch" / "smd_hp_2021_2022.csv"
TZ = "Europe/Zurich"
HEATING = (10, 11, 12, 1, 2, 3, 4)
BLIND = ("yesterday", "last_week", "median7", "mean7")
MODELS = ("no_temp", "temp_observed", "temp_noisy")
TARGET_VS_BLIND, TARGET_VS_NO_TEMP, TARGET_SLOT = 0.80, 0.90, 1.0


def months_between(start: str, end: str, heating_only: bool = True) -> list[str]:
    """YYYY-MM months in [start, end) (either YYYY-MM or an ISO date), October-April only by default."""
    y, m = int(start[:4]), int(start[5:7])
    out = []
    while f"{y}-{m:02d}" < end[:7]:
        if not heating_only or m in HEATING:
            out.append(f"{y}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def cli(log: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    with open(log, "a") as f:
        f.write(r.stdout)
    if r.returncode != 0:
        raise RuntimeError(f"python -m training {args[0]} failed ({r.returncode}): {r.stdout[-2000:]}")
    return r.stdout


def read_forecasts(path: Path) -> dict[int, np.ndarray]:
    """issue time → its 96 values (issues at 00:00 UTC only)."""
    rows: dict[int, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(parse_time_ns(row["issued_at"]), []).append(float(row["value_kwh"]))
    return {t: np.array(v) for t, v in rows.items() if len(v) == SLOTS_PER_DAY}


def blind_forecasts(series: SlotSeries, issue_ns: int) -> dict[str, np.ndarray]:
    """The temperature-blind baselines for the 96 slots after issue_ns (only slots known at issue_ns)."""
    idx = series.index_of(issue_ns) + np.arange(1, SLOTS_PER_DAY + 1)
    lags = np.stack([series.values[idx - k * SLOTS_PER_DAY] if (idx - k * SLOTS_PER_DAY).min() >= 0
                     else np.full(len(idx), np.nan) for k in range(1, 8)], axis=1)
    return {"yesterday": lags[:, 0], "last_week": lags[:, 6], "median7": np.median(lags, axis=1),
            "mean7": np.mean(lags, axis=1)}


def day_rows(series: SlotSeries, forecasts: dict[str, dict[int, np.ndarray]], start_ns: int, end_ns: int
             ) -> tuple[list[int], dict[str, np.ndarray], np.ndarray]:
    """The scored days (issue times), every forecaster's 96 values per day, and the actual values."""
    issues, fc, actual = [], {n: [] for n in (*MODELS, *BLIND)}, []
    for t in range(start_ns, end_ns, DAY_NS):
        y = series.window(t + DAY_NS, SLOTS_PER_DAY)
        base = blind_forecasts(series, t)
        if not np.isfinite(y).all() or not all(t in forecasts[m] for m in MODELS) \
                or not all(np.isfinite(v).all() for v in base.values()):
            continue
        issues.append(t)
        actual.append(y)
        for m in MODELS:
            fc[m].append(forecasts[m][t])
        for b in BLIND:
            fc[b].append(base[b])
    return issues, {n: np.array(v).reshape(-1, SLOTS_PER_DAY) for n, v in fc.items()}, \
        np.array(actual).reshape(-1, SLOTS_PER_DAY)


def maes(fc: dict[str, np.ndarray], actual: np.ndarray) -> dict[str, dict[str, float]]:
    """Daily, hourly and 15-minute MAE (kWh) of every forecaster."""
    out: dict[str, dict[str, float]] = {"daily": {}, "hourly": {}, "slot": {}}
    for name, v in fc.items():
        e = v - actual
        out["daily"][name] = float(np.abs(e.sum(axis=1)).mean())
        out["hourly"][name] = float(np.abs(e.reshape(len(e), 24, 4).sum(axis=2)).mean())
        out["slot"][name] = float(np.abs(e).mean())
    return out


def days_exact(fc: dict[str, np.ndarray], actual: np.ndarray) -> dict[str, float]:
    """A forecast whose every day adds up to the actual energy — the 7-day mean's shape scaled to the day's true sum
    (an oracle for the day) — scored per slot (× the 7-day median's 15-minute MAE) and per hour (× the best blind
    baseline's hourly MAE). A cycling load's slot medians add up far below its days: a forecast whose days are
    right pays about this much per slot and per hour."""
    shape = fc["mean7"]
    scaled = shape * (actual.sum(axis=1) / np.maximum(shape.sum(axis=1), 1e-9))[:, None]
    hourly = lambda v: np.abs((v - actual).reshape(len(v), 24, 4).sum(axis=2)).mean()  # noqa: E731
    return {"slot": round(float(np.abs(scaled - actual).mean() / np.abs(fc["median7"] - actual).mean()), 4),
            "hourly": round(float(hourly(scaled) / min(hourly(fc[b]) for b in BLIND)), 4)}


def ratios(m: dict[str, dict[str, float]], model: str) -> dict:
    """The issue's four ratios for `model` (temp_noisy or temp_observed)."""
    best = min(BLIND, key=lambda b: m["daily"][b])
    best_h = min(BLIND, key=lambda b: m["hourly"][b])
    return {"daily_mae_ratio_vs_best_blind": round(m["daily"][model] / m["daily"][best], 4),
            "daily_mae_ratio_vs_no_temp": round(m["daily"][model] / m["daily"]["no_temp"], 4),
            "hourly_mae_ratio_vs_best_blind": round(m["hourly"][model] / m["hourly"][best_h], 4),
            "slot_mae_ratio_vs_median7": round(m["slot"][model] / m["slot"]["median7"], 4)}


# -- the bound: a linear model of the day's energy on the daily inputs ------------------------------------------------
def lad(x: np.ndarray, y: np.ndarray, iterations: int = 100) -> np.ndarray:
    a = np.c_[x, np.ones(len(x))]
    w = np.ones(len(y))
    coef = np.zeros(a.shape[1])
    for _ in range(iterations):
        coef = np.linalg.lstsq(a * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
        w = 1 / np.maximum(np.abs(y - a @ coef), 1e-3)
    return coef


def daily_inputs(series: SlotSeries, temps: TemperatureForecasts, issues: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per issue: [yesterday's energy, 7-day mean energy, forecast day mean °C, yesterday's, last 7 days'] and the
    day's energy (NaN rows where something is unknown)."""
    spec = wx.WeatherSpec(TZ)
    xs, ys = [], []
    for t in issues:
        idx = series.index_of(t)
        past = series.values[max(0, idx - 7 * SLOTS_PER_DAY + 1):idx + 1]
        ends = t + SLOT_NS * np.arange(1, SLOTS_PER_DAY + 1)
        f = wx.features(spec, ["temp_day", "temp_day_1d", "temp_day_7d"], temps.at(t), ends)
        xs.append([np.sum(past[-SLOTS_PER_DAY:]), np.sum(past) / 7, *(float(np.mean(f[k])) for k in
                                                                      ("temp_day", "temp_day_1d", "temp_day_7d"))])
        ys.append(float(np.sum(series.window(t + DAY_NS, SLOTS_PER_DAY))))
    return np.array(xs), np.array(ys)


def bound(series: SlotSeries, temps: TemperatureForecasts, by_month: dict[str, list[int]], blind: dict[str, float]
          ) -> dict:
    """Hindsight and walk-forward LAD on the daily inputs, as MAE × the best blind baseline's daily MAE."""
    all_issues = [t for m in by_month.values() for t in m]
    x, y = daily_inputs(series, temps, all_issues)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    out: dict = {}
    if ok.sum() > 10:
        coef = lad(x[ok], y[ok])
        hindsight = np.abs(np.c_[x[ok], np.ones(ok.sum())] @ coef - y[ok]).mean()
        out["daily_linear_hindsight"] = round(float(hindsight) / blind["overall"], 4)
    first_day = int(series.start_ns // DAY_NS * DAY_NS + 8 * DAY_NS)  # a week of history for the inputs
    days = np.arange(first_day, max((min(i) for i in by_month.values()), default=first_day), DAY_NS)
    hx, hy = daily_inputs(series, temps, days.tolist()) if len(days) else (np.zeros((0, 5)), np.zeros(0))
    errs = []
    for month, issues in by_month.items():  # fitted on every day before the month, as a forecaster would be
        before = days < min(issues)
        fx, fy = hx[before], hy[before]
        fit = np.isfinite(fx).all(axis=1) & np.isfinite(fy)
        mx, my = daily_inputs(series, temps, issues)
        good = np.isfinite(mx).all(axis=1) & np.isfinite(my)
        if fit.sum() > 30 and good.any():
            coef = lad(fx[fit], fy[fit])
            e = np.abs(np.c_[mx[good], np.ones(good.sum())] @ coef - my[good])
            errs += e.tolist()
            out.setdefault("months", {})[month] = round(float(e.mean()) / blind[month], 4)
    if errs:
        out["daily_linear_walk_forward"] = round(float(np.mean(errs)) / blind["overall"], 4)
    return out


# -- one month --------------------------------------------------------------------------------------------------------
def run_month(out: Path, data: Path, month: str, bundle: str, noise: float, noise_seed: int, seed: int,
              daily_loss: float | None, extra: list[str]) -> None:
    """Train before the month, backtest it three times; the forecasts stay in out/."""
    start, end = month_bounds(month)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "training.log"
    common = ["--data", str(data), "--input-kind", "local-slots", "--timezone", TZ]
    weather = f"{bundle}-weather"
    if not (out / weather / "manifest.json").exists() or not (out / bundle / "manifest.json").exists():
        cli(log, "train", *common, "--temperature", str(data), "--until", start, "--out", str(out), "--only", weather,
            "--keep-weather", "--seed", str(seed), *(["--daily-loss", str(daily_loss)] if daily_loss is not None
                                                     else []), *extra)
    runs = {"no_temp": (bundle, []), "temp_observed": (weather, ["--temperature", str(data)]),
            "temp_noisy": (weather, ["--temperature", str(data), "--forecast-noise", str(noise),
                                     "--noise-seed", str(noise_seed)])}
    for name, (b, args) in runs.items():
        cli(log, "backtest", "--bundle", str(out / b), *common, *args, "--start", start, "--end", end,
            "--out", str(out / f"{name}.csv"))


def score_month(out: Path, series: SlotSeries, month: str) -> tuple[list[int], dict[str, np.ndarray], np.ndarray]:
    start, end = (parse_time_ns(t) for t in month_bounds(month))
    forecasts = {m: read_forecasts(out / f"{m}.csv") for m in MODELS}
    return day_rows(series, forecasts, start, end)


def rule_verdict(out: Path, bundle: str, series: SlotSeries, temperature: SlotSeries) -> dict | None:
    """What the shipping rule (training.weather.weather_verdict, as it stands) says about the month's weather bundle
    on its own validation days (recorded in its manifest as `metrics.weather` by the training; kept in verdict.json)."""
    from training.weather import weather_verdict

    cache = out / "verdict.json"
    weather = out / f"{bundle}-weather"
    if not (weather / "manifest.json").exists():
        return None
    if cache.exists():
        return json.loads(cache.read_text())
    data = json.loads((weather / "manifest.json").read_text())["data"]
    start, end = parse_time_ns(data["validation_start"]), parse_time_ns(data["end"]) - DAY_NS
    doc = weather_verdict(weather, out / bundle, series.until(parse_time_ns(data["end"])), temperature, TZ,
                          np.arange(start, end + 1, SLOT_NS, dtype=np.int64))
    cache.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def table(report: dict) -> str:
    rows = ["| month | days | daily MAE kWh: best blind / no temp / temp (observed) / temp (noisy) | daily × best "
            "blind (noisy; observed) | daily × no temp (noisy) | hourly × best blind | 15-min × 7-day median | "
            "daily bound (walk-forward) | days exact: hourly / 15-min | rule |", "|---" * 10 + "|"]
    for month, m in report["months"].items():
        d = m["mae_kwh"]["daily"]
        rows.append(f"| {month} | {m['days']} | {d[m['best_blind']]:.2f} ({m['best_blind']}) / {d['no_temp']:.2f} / "
                    f"{d['temp_observed']:.2f} / {d['temp_noisy']:.2f} | {m['daily_mae_ratio_vs_best_blind']:.3f}; "
                    f"{m['observed']['daily_mae_ratio_vs_best_blind']:.3f} | {m['daily_mae_ratio_vs_no_temp']:.3f} | "
                    f"{m['hourly_mae_ratio_vs_best_blind']:.3f} | {m['slot_mae_ratio_vs_median7']:.3f} | "
                    f"{m.get('bound_walk_forward', float('nan')):.3f} | {m['days_exact']['hourly']:.3f} / "
                    f"{m['days_exact']['slot']:.3f} | "
                    f"{'ships' if (m.get('rule') or {}).get('ship') else 'no'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(CSV), help="a local-slots CSV (Timestamp, Energy_kWh, daily_avgTmp)")
    ap.add_argument("--start", default="2021-10", help="first month (YYYY-MM or an ISO date)")
    ap.add_argument("--end", default="2023-01", help="end, exclusive (YYYY-MM or an ISO date)")
    ap.add_argument("--months", nargs="+", help="these months instead of the heating months in [start, end)")
    ap.add_argument("--bundle", default="cnn-96", choices=("cnn-96", "lstm-96"))
    ap.add_argument("--noise", type=float, default=1.5, help="σ of the forecast error, °C")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42, help="training seed")
    ap.add_argument("--daily-loss", type=float,
                    help="train --daily-loss (the day's error in the loss; default: training decides from the data, "
                         "4 for this heat pump)")
    ap.add_argument("--out", default=str(ROOT / "artefacts" / "eval-heatpump"))
    ap.add_argument("--resume", action="store_true", help="reuse the months already backtested in --out")
    ap.add_argument("--train-arg", action="append", default=[], help="extra argument for `python -m training train`")
    args = ap.parse_args(argv)
    out, data = Path(args.out), Path(args.data)
    loaded = read_local_slots(data, TZ)
    series, observed = loaded.energy, loaded.temperature
    if observed is None:
        sys.exit(f"{data}: no temperature column")
    last = iso(series.last_ns)[:7]
    months = args.months or [m for m in months_between(args.start, args.end) if m <= last]
    noisy = TemperatureForecasts(observed, TZ, args.noise, args.noise_seed)
    report: dict = {"months": {}}
    pooled: dict[str, list] = {"fc": [], "actual": []}
    by_month: dict[str, list[int]] = {}
    blind_daily: dict[str, float] = {}
    for month in months:
        cell = out / month
        if not (args.resume and all((cell / f"{m}.csv").exists() for m in MODELS)):
            t0 = time.time()
            print(f"[eval-heatpump] {month}: training and backtesting …", file=sys.stderr, flush=True)
            run_month(cell, data, month, args.bundle, args.noise, args.noise_seed, args.seed, args.daily_loss,
                      args.train_arg)
            print(f"[eval-heatpump] {month}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        issues, fc, actual = score_month(cell, series, month)
        if not issues:
            continue
        m = maes(fc, actual)
        best = min(BLIND, key=lambda b: m["daily"][b])
        report["months"][month] = {**ratios(m, "temp_noisy"), "days": len(issues), "best_blind": best,
                                   "observed": ratios(m, "temp_observed"),
                                   "mae_kwh": {k: {n: round(v, 4) for n, v in d.items()} for k, d in m.items()},
                                   "rule": rule_verdict(cell, args.bundle, series, observed),
                                   "days_exact": days_exact(fc, actual)}
        pooled["fc"].append(fc)
        pooled["actual"].append(actual)
        by_month[month] = issues
        blind_daily[month] = m["daily"][best]
    if not pooled["actual"]:
        sys.exit("no month could be scored")
    fc_all = {n: np.concatenate([f[n] for f in pooled["fc"]]) for n in pooled["fc"][0]}
    m_all = maes(fc_all, np.concatenate(pooled["actual"]))
    blind_daily["overall"] = min(m_all["daily"][b] for b in BLIND)
    b = bound(series, noisy, by_month, blind_daily)
    for month, r in b.pop("months", {}).items():
        report["months"][month]["bound_walk_forward"] = r
    overall = ratios(m_all, "temp_noisy")
    report["overall_observed"] = ratios(m_all, "temp_observed")
    report["overall_mae_kwh"] = {k: {n: round(v, 4) for n, v in d.items()} for k, d in m_all.items()}
    b["days_exact"] = days_exact(fc_all, np.concatenate(pooled["actual"]))
    report["bound"] = b
    report["targets"] = {"daily_vs_best_blind": TARGET_VS_BLIND, "daily_vs_no_temp": TARGET_VS_NO_TEMP,
                         "slot_vs_median7": TARGET_SLOT}
    report["met"] = {"daily_vs_best_blind": overall["daily_mae_ratio_vs_best_blind"] <= TARGET_VS_BLIND,
                     "daily_vs_no_temp": overall["daily_mae_ratio_vs_no_temp"] <= TARGET_VS_NO_TEMP,
                     "slot_vs_median7": overall["slot_mae_ratio_vs_median7"] <= TARGET_SLOT}
    report["noise"] = {"sigma_c": args.noise, "seed": args.noise_seed, "bundle": args.bundle, "training_seed": args.seed,
                       "daily_loss": args.daily_loss}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report | {"overall": overall}, indent=2) + "\n")
    print(table(report))
    print(f"overall (noisy forecast, {sum(len(v) for v in by_month.values())} days): {json.dumps(overall)}; observed "
          f"forecast: {json.dumps(report['overall_observed'])}; bound (daily linear, noisy): {json.dumps(b)}; "
          f"targets met: {json.dumps(report['met'])}")
    print(json.dumps({"overall": overall, "months": report["months"], "noise_sigma_c": args.noise}))


if __name__ == "__main__":
    main()
