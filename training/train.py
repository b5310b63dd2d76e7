"""Train the bundles of training.plans (cnn-1, lstm-1, cnn-96, lstm-96) on slots before `until`.

`train_one` reads as its steps: split and scale, baselines, fit, held-out scores, refit, export, manifest.
Time-ordered split: the last `validation_fraction` of the issue times is validation; training issues whose
targets reach into the validation period are dropped (no leakage). Early stopping on the validation loss,
fixed seeds, progress printed as `progress: <percent> <stage>` lines (the server parses them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared import manifest as mf
from shared import weather as wx
from shared.schema import DAY_NS, SLOT_NS, SLOTS_PER_DAY, WEATHER_SUFFIX
from shared.series import SlotSeries, iso, parse_time_ns
from shared.verdict import SEED_REFERENCE
from shared.window import WindowSpec, scale_target
from training import dataset, export
from training import intervals as train_intervals
from training.fit import FIT_SHARE, fit_members, refit
from training.models import ensemble
from training.plans import BundlePlan, TrainOptions
from training.progress import begin_model, log, progress, start_run
from training.scoring import ModelScores, baseline_scores, model_scores

INT8_GAP_WARN = 0.02  # the int8 model may differ from the float one by at most this much validation MAE
QUICK_SAMPLES = (600, 200)  # --quick: the last training and the first validation issue times kept

# Where in a bundle's progress span each step starts (the members' fit takes the first FIT_SHARE).
HELD_OUT_AT, REFIT_AT, EXPORT_AT = FIT_SHARE, 0.77, 0.85


@dataclass
class Split:
    """A bundle's window (scaled with its training targets) and its training and validation samples:
    x inputs, y kWh targets (NaN where unknown), s what the model learns, t issue times."""

    spec: WindowSpec
    xt: np.ndarray
    yt: np.ndarray
    st: np.ndarray
    tt: np.ndarray
    xv: np.ndarray
    yv: np.ndarray
    sv: np.ndarray
    tv: np.ndarray


def _span(pct: tuple[float, float], fraction: float) -> float:
    return pct[0] + (pct[1] - pct[0]) * fraction


def split_issues(issues: np.ndarray, horizon: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last `fraction` of the issue times is validation; training issues whose targets reach into it are
    dropped."""
    if len(issues) == 0:
        return issues, issues
    cut = issues[int(len(issues) * (1 - fraction))]
    train = issues[issues + horizon * SLOT_NS < cut]
    return train, issues[issues >= cut]


def split_and_scale(plan: BundlePlan, series: SlotSeries, opts: TrainOptions, pct: tuple[float, float]) -> Split:
    """Time-ordered issue split, scaling from the training targets only."""
    until = opts.until_ns or series.last_ns + SLOT_NS
    issues = dataset.issue_times(series, series.start_ns, until - plan.horizon * SLOT_NS + 1)
    train_issues, val_issues = split_issues(issues, plan.horizon, opts.validation_fraction)
    train_issues = train_issues[::plan.every]
    if opts.quick:
        train_issues, val_issues = train_issues[-QUICK_SAMPLES[0]:], val_issues[:QUICK_SAMPLES[1]]
    spec = plan.window(opts.holidays, opts.weather)
    temperature = None
    if spec.uses_weather:  # the forecast as the edge will get it: observed + the forecast's error (training.weather)
        from training.weather import TemperatureForecasts

        temperature = TemperatureForecasts(opts.temperature, spec.weather_spec.timezone, opts.temperature_noise_c,
                                           seed=opts.seed)
    y_all = series.values[series.index_of(int(train_issues[0])):series.index_of(int(train_issues[-1])) + 1]
    spec.mean = float(np.nanmean(y_all))
    spec.std = float(np.nanstd(y_all)) or 1.0
    progress(pct[0], f"{plan.name}: building samples")
    xt, yt, tt = dataset.build(spec, series, train_issues, plan.min_known, temperature)
    xv, yv, tv = dataset.build(spec, series, val_issues, plan.min_known, temperature)
    if len(xt) < 50 or len(xv) < 10:
        raise ValueError(f"{plan.name}: not enough complete samples (train {len(xt)}, validation {len(xv)}): "
                         f"need about 8 days of history plus training data")
    log(plan.name, f"{len(xt)} training and {len(xv)} validation samples, train {iso(int(tt[0]))} … "
                   f"{iso(int(tt[-1]))}, validation {iso(int(tv[0]))} … {iso(int(tv[-1]))}")
    return Split(spec, xt, yt, scale_target(spec, yt, xt), tt, xv, yv, scale_target(spec, yv, xv), tv)


def held_out_scores(plan: BundlePlan, split: Split, trained: list, model, rep: np.ndarray, doc: dict,
                    ok: np.ndarray, pct: tuple[float, float]) -> ModelScores:
    """The early-stopped members, float and exported to int8, on the validation windows: taken before the
    refit, which sees those windows."""
    progress(_span(pct, HELD_OUT_AT), f"{plan.name}: int8 check before refit")
    held_out = export.export_members(plan.kind, split.spec, trained, rep)
    return model_scores(split.spec, doc, held_out, model, split.xv, split.yv, ok)


def refit_members(plan: BundlePlan, split: Split, trained: list, opts: TrainOptions,
                  pct: tuple[float, float]) -> dict:
    return refit(plan, trained, np.concatenate([split.xt, split.xv]), np.concatenate([split.st, split.sv]), opts,
                 (_span(pct, REFIT_AT), _span(pct, EXPORT_AT)))


def export_bundle_model(plan: BundlePlan, split: Split, trained: list, rep: np.ndarray, out_dir: Path,
                        pct: tuple[float, float]) -> bytes:
    """The shipped int8 model; its float twin goes to out_dir/float/ (not part of the bundle, for
    `backtest --float-model` only)."""
    progress(_span(pct, EXPORT_AT), f"{plan.name}: int8 export")
    return export.export_members(plan.kind, split.spec, trained, rep,
                                 float_file=out_dir / "float" / f"{plan.name}.tflite")


def manifest_head(plan: BundlePlan, spec: WindowSpec, version: str) -> dict:
    """What the manifest knows before the model exists (enough to run a converted model through
    shared.inference)."""
    return {
        "schema_version": mf.SCHEMA_VERSION, "name": plan.name, "kind": plan.kind, "horizon_steps": plan.horizon,
        "version": version, "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window": spec.to_dict(),
    }


def interval_entries(series: SlotSeries, plan: BundlePlan, split: Split, held_out: ModelScores) -> tuple[dict, dict]:
    """The manifest's `intervals` (P10/P90) from the held-out int8 forecasts on the validation windows, and
    their validation record."""
    return train_intervals.calibrate(series, split.tv, held_out.int8_pred, split.yv, plan.horizon)


def complete_manifest(doc: dict, plan: BundlePlan, split: Split, model_bytes: bytes, baselines: dict,
                      held_out: ModelScores | None, shipped: ModelScores, refit_record: dict | None,
                      opts: TrainOptions, t_start: float, intervals: tuple[dict, dict] | None = None) -> dict:
    """The whole manifest. `metrics.validation` is always held out: for a refitted bundle the early-stopped
    members' scores, and the shipped model's scores on the by-then-seen windows go to `training.refit`."""
    validation = {"baselines": baselines, **(held_out or shipped).as_dict()}
    if intervals:
        doc = {**doc, "intervals": intervals[0]}
        validation["interval"] = intervals[1]
    if refit_record:
        refit_record["validation_seen"] = shipped.as_dict()
    doc = {**doc, **export.manifest_entries(model_bytes)}
    doc["metrics"] = {"validation": validation, "int8_vs_float": shipped.int8_vs_float(),
                      "seed_reference": SEED_REFERENCE}
    doc["data"] = {"start": iso(int(split.tt[0])), "end": iso(int(split.tv[-1]) + plan.horizon * SLOT_NS),
                   "train_samples": int(len(split.xt)), "validation_samples": int(len(split.xv)),
                   "validation_start": iso(int(split.tv[0]))}
    doc["runtimes"] = export.check_runtimes(model_bytes)
    loss = f"{plan.loss} + {opts.daily_loss:g} × day" if plan.loss == "masked_mae" and opts.daily_loss else plan.loss
    doc["training"] = {"seconds": round(time.time() - t_start, 1), "loss": loss, "seed": opts.seed,
                       "epochs_max": opts.epochs, "refit": refit_record or None, "quick": opts.quick}
    if split.spec.uses_weather:
        doc["training"]["temperature_noise_c"] = opts.temperature_noise_c
    mf.validate(doc)
    return doc


def write_bundle(bundle: Path, doc: dict, model_bytes: bytes) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / mf.MODEL_FILE).write_bytes(model_bytes)
    (bundle / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))


def report(doc: dict) -> None:
    """The bundle's summary line, and a warning when int8 lost too much against float."""
    name, validation = doc["name"], doc["metrics"]["validation"]
    gap = doc["metrics"]["int8_vs_float"]["mae_rel"]
    if gap > INT8_GAP_WARN:
        log(name, f"WARNING: the int8 model's validation MAE is {100 * gap:.1f} % away from the float model's "
                  f"(more than {100 * INT8_GAP_WARN:.0f} %): check the bundle before deploying it")
    best = min(validation["baselines"].items(), key=lambda item: item[1]["mae"])
    log(name, f"int8 rmse {validation['int8']['rmse']:.4f} mae {validation['int8']['mae']:.4f} | float mae "
              f"{validation['float']['mae']:.4f} | best baseline {best[0]} mae {best[1]['mae']:.4f} | "
              f"{doc['model']['bytes']} bytes, {doc['training']['seconds']} s")


def train_one(plan: BundlePlan, series: SlotSeries, out_dir: Path, version: str, opts: TrainOptions,
              pct: tuple[float, float]) -> dict:
    """One bundle; `pct` is its share of the run's progress. The order of the TensorFlow steps (fit, held-out
    export, refit, export) is what a seed reproduces: keep it."""
    t_start = time.time()
    split = split_and_scale(plan, series, opts, pct)
    baselines, ok = baseline_scores(series, split.tv, split.yv, plan.horizon)
    trained = fit_members(plan, split.spec, (split.xt, split.st, split.xv, split.sv), opts, pct)
    model = ensemble(trained, split.spec)  # the members' layers, shared: it follows the refit
    rep = export.representative(split.xt, opts.seed)
    doc = manifest_head(plan, split.spec, version)
    held_out = refit_record = None
    if opts.refit_epochs(plan):
        held_out = held_out_scores(plan, split, trained, model, rep, doc, ok, pct)
        refit_record = refit_members(plan, split, trained, opts, pct)
    model_bytes = export_bundle_model(plan, split, trained, rep, out_dir, pct)
    shipped = model_scores(split.spec, doc, model_bytes, model, split.xv, split.yv, ok)
    intervals = interval_entries(series, plan, split, held_out or shipped)
    doc = complete_manifest(doc, plan, split, model_bytes, baselines, held_out, shipped, refit_record, opts,
                            t_start, intervals)
    write_bundle(out_dir / plan.name, doc, model_bytes)
    report(doc)
    return doc


def judge_weather(docs: dict[str, dict], series: SlotSeries, out_dir: Path, opts: TrainOptions) -> None:
    """The rule (training.weather.weather_verdict) for every weather bundle trained with its twin: recorded in its
    manifest (`metrics.weather`); a bundle that does not ship moves to out_dir/rejected/ (kept with
    `keep_weather`)."""
    import shutil

    from training.weather import weather_verdict

    for plan in opts.plans():
        if not plan.weather or plan.name not in docs or plan.twin not in docs:
            continue
        doc = docs[plan.name]
        start = parse_time_ns(doc["data"]["validation_start"])
        end = parse_time_ns(doc["data"]["end"]) - plan.horizon * SLOT_NS
        verdict = weather_verdict(out_dir / plan.name, out_dir / plan.twin, series, opts.temperature,
                                  (opts.weather or wx.WeatherSpec()).timezone,
                                  np.arange(start, end + 1, SLOT_NS, dtype=np.int64))
        doc["metrics"]["weather"] = verdict
        bundle = out_dir / plan.name
        write_bundle(bundle, doc, (bundle / mf.MODEL_FILE).read_bytes())
        log(plan.name, verdict["reason"])
        if not verdict["ship"] and not opts.keep_weather:
            target = out_dir / "rejected" / plan.name
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            bundle.rename(target)
            docs.pop(plan.name)


MEDIAN_DAY_SHARE = 0.8  # below this share of the days' energy in the 7-day medians' days: the day's error joins the loss
DAILY_LOSS_WEIGHT = 4.0  # its weight then (training.models.masked_mae_daily: above 1 the day's error dominates)


def median_day_share(series: SlotSeries) -> float | None:
    """What the sum of each day's 7-day slot medians is of the day's energy, over the complete days of `series`
    (None without enough). 0.93-0.98 in every season of the seed house; 0.30-0.54 for the heat pump, whose
    compressor cycles: its slot medians are mostly 'off'."""
    from shared.baselines import median_7_days

    v = series.values
    start = series.start_ns + 8 * SLOTS_PER_DAY * SLOT_NS
    issues = np.arange(-(-start // DAY_NS) * DAY_NS, series.last_ns - DAY_NS + 1, DAY_NS, dtype=np.int64)
    medians = actual = 0.0
    days = 0
    for t in issues.tolist():
        i = series.index_of(t)
        y = v[i + 1:i + 1 + SLOTS_PER_DAY]
        m = median_7_days(series, t, SLOTS_PER_DAY)
        if len(y) == SLOTS_PER_DAY and np.isfinite(y).all() and np.isfinite(m).all():
            medians, actual, days = medians + float(m.sum()), actual + float(y.sum()), days + 1
    return medians / actual if days >= 14 and actual > 0 else None


def daily_loss_for(series: SlotSeries, opts: TrainOptions) -> tuple[float, str]:
    """The day-ahead loss's weight on the day's error, and why: the option as given, else 1 when the house's 7-day
    medians add up to less than MEDIAN_DAY_SHARE of its days (a cycling load: MAE-optimal slot forecasts would
    forecast a fraction of the day's energy; weight DAILY_LOSS_WEIGHT), else 0 (the slots' MAE alone, as before)."""
    if opts.daily_loss is not None:
        return opts.daily_loss, "as given"
    share = median_day_share(series)
    if share is not None and share < MEDIAN_DAY_SHARE:
        return DAILY_LOSS_WEIGHT, (f"the 7-day medians' days add up to {share:.2f} of the days' energy "
                                   f"(< {MEDIAN_DAY_SHARE})")
    return 0.0, "the 7-day medians' days add up to " + ("?" if share is None else f"{share:.2f}") + \
        f" of the days' energy (≥ {MEDIAN_DAY_SHARE}, or too few days)"


def train_all(series: SlotSeries, out_dir: Path, opts: TrainOptions) -> dict[str, dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if opts.until_ns is not None:
        series = series.until(opts.until_ns - 1)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    plans = opts.plans()
    if any(p.loss == "masked_mae" for p in plans):
        weight, why = daily_loss_for(series, opts)
        opts = replace(opts, daily_loss=weight)
        log("day-ahead", "loss: slots' MAE" + (f" + {weight:g} × the day's error" if weight else " only") + f" ({why})")
    docs = {}
    start_run()
    bounds = np.cumsum([0.0] + [opts.cost(p) for p in plans])
    bounds = 100 * bounds / bounds[-1]  # each bundle's share of the bar: what it is expected to cost
    for i, plan in enumerate(plans):
        begin_model(i + 1, len(plans))
        docs[plan.name] = train_one(plan, series, out_dir, version, opts, (float(bounds[i]), float(bounds[i + 1])))
    weather_docs = {n: d for n, d in docs.items() if n.endswith(WEATHER_SUFFIX)}
    judge_weather(docs, series, out_dir, opts)
    progress(100, "done")
    summary = {n: d["metrics"]["validation"] for n, d in docs.items()}
    summary |= {f"{n} (rule)": d["metrics"]["weather"] for n, d in weather_docs.items() if "weather" in d["metrics"]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return docs
