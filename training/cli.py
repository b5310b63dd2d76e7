"""`python -m training train|backtest|evaluate` (run from the workstation's .venv)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from shared.extras import require
from shared.schema import ALL_BUNDLE_NAMES, BUNDLE_NAMES
from shared.series import parse_time_ns
from training.data import INPUT_KINDS
from training.plans import TrainOptions


def _series(args):
    from training.data import load

    return load(args.data, args.input_kind, args.timezone)


def _temperature(args):
    """The observed temperature record (--temperature), or None."""
    if not args.temperature:
        return None
    from training.weather import load_temperature

    return load_temperature(args.temperature, args.timezone)


def cmd_train(args) -> int:
    from training.train import train_all

    t0 = time.time()
    series = _series(args)
    from shared.weather import WeatherSpec

    temperature = _temperature(args)
    opts = TrainOptions(until_ns=parse_time_ns(args.until) if args.until else None, quick=args.quick,
                        max_epochs=args.epochs, only=tuple(args.only or ()), seed=args.seed,
                        holidays=holiday_calendar(args.holidays, args.timezone), temperature=temperature,
                        weather=WeatherSpec(args.timezone) if temperature is not None else None,
                        keep_weather=args.keep_weather, daily_loss=args.daily_loss,
                        temperature_noise_c=args.temperature_noise)
    docs = train_all(series, Path(args.out), opts)
    print(json.dumps({"seconds": round(time.time() - t0, 1), "bundles": {
        n: {"dir": str(Path(args.out) / n), "bytes": d["model"]["bytes"],
            "validation_int8": d["metrics"]["validation"]["int8"]} for n, d in docs.items()}}))
    return 0


def holiday_calendar(code: str | None, timezone: str):
    """`--holidays DE` or `DE-HE` (country, subdivision) → a checked calendar; None without."""
    if not code:
        return None
    from shared.calendar import HolidayCalendar

    return HolidayCalendar.parse(code, timezone).check()


def cmd_backtest(args) -> int:
    from training.backtest import backtest
    from training.weather import TemperatureForecasts

    temperature = _temperature(args)
    forecasts = None if temperature is None else TemperatureForecasts(temperature, args.timezone,
                                                                      args.forecast_noise, args.noise_seed)
    summary = backtest(Path(args.bundle), _series(args), parse_time_ns(args.start), parse_time_ns(args.end),
                       Path(args.out), Path(args.float_model) if args.float_model else None,
                       recalibrate=not args.fixed_band, temperature=forecasts)
    print(json.dumps(summary))
    return 0


def cmd_evaluate(args) -> int:
    from training.backtest import dumps, evaluate

    print(dumps(evaluate(Path(args.forecasts), _series(args))))
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", required=True,
                   help="CSV file (annotated Flux export, plain Flux CSV, or time,value); repeatable, merged")
    p.add_argument("--input-kind", choices=INPUT_KINDS, default=INPUT_KINDS[0],
                   help="cumulative counter in kWh (default), power in W, or local-slots: kWh per slot labelled by "
                        "its start in local time (columns Timestamp, Energy_kWh; --timezone)")
    p.add_argument("--timezone", default="UTC",
                   help="the house's IANA timezone: local dates for --holidays and the temperature's days, local "
                        "time of local-slots input (default UTC)")


def _temperature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", metavar="FILE",
                   help="the observed outdoor temperature: readings in °C (time,value or a Flux export) or a "
                        "local-slots CSV's temperature column; train adds the weather bundles "
                        "(cnn-96-weather, lstm-96-weather)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="home-energy-train", description="train, backtest and evaluate bundles")
    sub = ap.add_subparsers(dest="command", required=True)
    defaults = TrainOptions()
    t = sub.add_parser("train", help=f"train the {', '.join(BUNDLE_NAMES)} bundles")
    _data_args(t)
    t.add_argument("--until", help="train on data before this ISO time (default: all)")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=defaults.max_epochs)
    t.add_argument("--only", action="append", choices=ALL_BUNDLE_NAMES,
                   help="train only this bundle (repeatable; a weather bundle brings its twin)")
    t.add_argument("--seed", type=int, default=defaults.seed,
                   help="base random seed (ensemble members use seed, seed+1, …)")
    t.add_argument("--holidays", metavar="COUNTRY[-SUBDIVISION]",
                   help="public holidays as an input, e.g. DE or DE-HE (the holidays package; default: none)")
    _temperature_args(t)
    t.add_argument("--daily-loss", type=float, default=defaults.daily_loss, metavar="WEIGHT",
                   help="day-ahead loss: add WEIGHT × the day's error to the slots' MAE, so that a day's forecast "
                        "adds up to its energy (default: 4 when the house's 7-day slot medians add up to less than "
                        "0.8 of its days, e.g. a cycling heat pump; else 0)")
    t.add_argument("--temperature-noise", type=float, default=defaults.temperature_noise_c, metavar="SIGMA_C",
                   help="weather bundles train on the observed temperature + N(0, SIGMA_C) per day as the forecast "
                        f"(the error a day-ahead forecast has; default {defaults.temperature_noise_c}, 0: the observed)")
    t.add_argument("--keep-weather", action="store_true",
                   help="write the weather bundles even when they show no gain (docs/training.md's rule)")
    t.add_argument("--quick", action="store_true", help="tiny training for tests: not a useful model")
    t.set_defaults(func=cmd_train)
    b = sub.add_parser("backtest", help="walk-forward forecasts through the edge's inference code")
    b.add_argument("--bundle", required=True)
    _data_args(b)
    b.add_argument("--start", required=True)
    b.add_argument("--end", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--float-model", help="run this float reference model (DIR/float/NAME.tflite from train) "
                                         "instead of the bundle's int8 model")
    _temperature_args(b)
    b.add_argument("--forecast-noise", type=float, default=0.0, metavar="SIGMA_C",
                   help="the temperature forecast is the observed record + N(0, SIGMA_C) per local day (default 0)")
    b.add_argument("--noise-seed", type=int, default=0, help="seed of --forecast-noise")
    b.add_argument("--fixed-band", action="store_true",
                   help="the manifest's band as calibrated, without the edge's recalibration on the last 7 days "
                        "of scored slots (shared.intervals)")
    b.set_defaults(func=cmd_backtest)
    e = sub.add_parser("evaluate", help="model vs baselines on the same slots, as JSON")
    e.add_argument("--forecasts", required=True)
    _data_args(e)
    e.set_defaults(func=cmd_evaluate)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # train needs TensorFlow; backtest only the interpreter, evaluate nothing beyond the core
    require("home-energy-train", "training", {"train": None, "backtest": ("ai_edge_litert",)}.get(args.command, ()))
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
