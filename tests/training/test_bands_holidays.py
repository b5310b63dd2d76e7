"""Training writes the P10/P90 calibration and, with --holidays, the holiday input and its declared calendar; the
backtest and evaluate carry the band through the edge's inference code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from shared import intervals as iv
from shared import manifest as mf
from shared.inference import LoadedModel
from shared.series import counter_to_slots, parse_time_ns, read_csv
from shared.window import HOLIDAY, build_input
from training.backtest import evaluate, read_forecast_rows

CSV = "data/seed_house/raw_data.csv"


def _cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_holiday_bundle_declares_its_calendar_and_the_band_reaches_the_backtest(tmp_path):
    out = tmp_path / "bundles"
    _cli("train", "--data", CSV, "--until", "2023-05-10T00:00:00Z", "--out", str(out), "--quick", "--only", "cnn-96",
         "--holidays", "DE", "--timezone", "Europe/Berlin")
    doc = mf.load(out / "cnn-96")
    assert doc["window"]["features"][-1] == HOLIDAY
    assert doc["window"]["holidays"] == {"country": "DE", "subdivision": None, "timezone": "Europe/Berlin"}
    iv.validate(doc["intervals"], 96)
    record = doc["metrics"]["validation"]["interval"]
    assert record["calibration"]["n"] > 0 and 0.7 <= record["calibration"]["coverage"] <= 0.9
    assert record["climatology"]["n"] > 0

    # the edge's inference code: Whit Monday (2023-05-29) is a holiday input, the day after is not
    series = counter_to_slots(read_csv(CSV))
    model = LoadedModel.from_dir(out / "cnn-96")
    issue = parse_time_ns("2023-05-28T22:00:00Z")
    x, _ = build_input(model.spec, series, issue)
    assert np.all(x[0, :, -1] == 1.0)
    csv = tmp_path / "f.csv"
    _cli("backtest", "--bundle", str(out / "cnn-96"), "--data", CSV, "--start", "2023-05-20T00:00:00Z",
         "--end", "2023-06-10T00:00:00Z", "--out", str(csv))
    _, _, _, values, p10, p90 = read_forecast_rows(csv)
    assert len(values) == 21 * 96 and np.all(p10 <= values) and np.all(values <= p90)
    result = evaluate(csv, series)
    assert set(result["interval"]) == {"model", "climatology"}
    assert result["interval"]["model"]["n"] == result["interval"]["climatology"]["n"] > 0

    # the band the edge serves: recalibrated at each issue on the last 7 days of the backtest's own forecasts.
    # Recomputed here from the fixed band (the manifest's table as calibrated) and the actual values alone.
    fixed = tmp_path / "fixed.csv"
    _cli("backtest", "--bundle", str(out / "cnn-96"), "--data", CSV, "--start", "2023-05-20T00:00:00Z",
         "--end", "2023-06-10T00:00:00Z", "--out", str(fixed), "--fixed-band")
    issued, target, _, v0, lo0, hi0 = read_forecast_rows(fixed)
    np.testing.assert_allclose(v0, values)
    actual = np.array([series.values[series.index_of(int(t))] for t in target])
    need = np.where(actual >= v0, (actual - v0) / (hi0 - v0), (v0 - actual) / (v0 - lo0))
    scales = []
    for t in np.unique(issued):
        known = (target <= t) & (target > t - 7 * 96 * 900 * 10**9) & np.isfinite(need)
        want = float(np.clip(np.quantile(need[known], 0.8), 0.5, 3.0)) if known.sum() >= 96 else 1.0
        rows = (issued == t) & (hi0 - v0 > 1e-4)
        half = hi0[rows] - v0[rows]
        got = (p90[rows] - values[rows]) / half
        # the CSV keeps 6 decimals: a ratio of two rounded differences is only exact to about 1e-6 / half-width
        rounding = 1e-6 * (1 + want) / half
        assert np.all(np.abs(got - want) <= 2e-3 * want + 2e-4 + rounding), (t, got, want)
        scales.append(want)
    assert scales[0] == 1.0 and len(set(scales)) > 5  # the table at first, then the last week's scale


def test_unknown_holiday_country_is_refused_before_training(tmp_path):
    r = subprocess.run([sys.executable, "-m", "training", "train", "--data", CSV, "--out", str(tmp_path), "--quick",
                        "--holidays", "XX"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown country 'XX'" in r.stderr
    assert not list(tmp_path.iterdir())
