"""The CLI contract: a quick training writes four loadable int8 bundles; backtest and evaluate formats."""

import csv
import json
import subprocess
import sys

import numpy as np

from shared import manifest as mf
from shared.inference import LoadedModel
from shared.schema import BUNDLE_NAMES
from tests.conftest import ROOT, SEED_CSV


def test_quick_training_writes_four_valid_int8_bundles(seed_bundles):
    assert sorted(p.name for p in seed_bundles.iterdir()) == sorted([*BUNDLE_NAMES, "float", "summary.json"])
    for name in BUNDLE_NAMES:
        b = seed_bundles / name
        assert sorted(p.name for p in b.iterdir()) == ["manifest.json", "model.tflite"]  # nothing executable
        doc = mf.load(b)
        assert doc["model"]["sha256"] == mf.sha256_file(b / "model.tflite")
        assert doc["input"]["dtype"] == "int8" and doc["output"]["dtype"] == "int8"
        assert doc["runtimes"]["ai-edge-litert"] == "2.3.0"
        if (ROOT / ".venv-tflite" / "bin" / "python").exists():  # make venv-tflite: checked in a subprocess
            assert doc["runtimes"]["tflite-runtime"] == "2.14.0"
        else:
            assert doc["runtimes"]["tflite-runtime"].startswith("not tested")
        assert doc["data"]["end"] <= "2023-05-10T00:00:00Z"
        val = doc["metrics"]["validation"]
        assert set(val["baselines"]) == {"persistence", "same_slot_yesterday", "same_slot_last_week",
                                         "median_7_days"}
        assert val["int8"]["n"] == val["baselines"]["persistence"]["n"] > 0
        refit = doc["training"]["refit"]
        if name.endswith("-96"):  # refit on training + validation: held-out scores are from before the refit
            assert refit["epochs"] == 1 and refit["samples"] == doc["data"]["train_samples"] + \
                doc["data"]["validation_samples"]
            assert refit["validation_seen"]["int8"]["n"] == val["int8"]["n"]
            assert refit["validation_seen"]["int8"]["mae"] != val["int8"]["mae"]  # a different model was shipped
        else:
            assert refit is None
        m = LoadedModel.from_dir(b)
        assert m.runtime.name == "ai-edge-litert"
        assert doc["model"]["bytes"] < 200_000


def _run(*args):
    r = subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_backtest_and_evaluate_formats(seed_bundles, tmp_path):
    out1, out96 = tmp_path / "f1.csv", tmp_path / "f96.csv"
    _run("backtest", "--bundle", str(seed_bundles / "cnn-1"), "--data", str(SEED_CSV),
         "--start", "2023-06-18T02:00:00Z", "--end", "2023-06-19T02:00:00Z", "--out", str(out1))
    _run("backtest", "--bundle", str(seed_bundles / "lstm-96"), "--data", str(SEED_CSV),
         "--start", "2023-06-18T02:00:00Z", "--end", "2023-06-21T00:00:00Z", "--out", str(out96))
    rows1 = list(csv.DictReader(out1.read_text().splitlines()))
    assert list(rows1[0]) == ["issued_at", "target_time", "horizon_steps", "value_kwh", "p10_kwh", "p90_kwh"]
    assert all(float(r["p10_kwh"]) <= float(r["value_kwh"]) <= float(r["p90_kwh"]) for r in rows1)
    assert rows1[0]["issued_at"] == "2023-06-18T02:00:00Z" and rows1[0]["target_time"] == "2023-06-18T02:15:00Z"
    assert len(rows1) == 96 and all(r["horizon_steps"] == "1" for r in rows1)
    rows96 = list(csv.DictReader(out96.read_text().splitlines()))
    issued = sorted({r["issued_at"] for r in rows96})
    assert issued == ["2023-06-19T00:00:00Z", "2023-06-20T00:00:00Z"]  # day-ahead: 00:00 UTC only
    first_day = [r for r in rows96 if r["issued_at"] == issued[0]]
    assert [int(r["horizon_steps"]) for r in first_day] == list(range(1, 97))
    assert first_day[0]["target_time"] == "2023-06-19T00:15:00Z" and first_day[-1]["target_time"] == "2023-06-20T00:00:00Z"
    assert all(float(r["value_kwh"]) >= 0 for r in rows96)
    doc = json.loads(_run("evaluate", "--forecasts", str(out1), "--data", str(SEED_CSV)))
    assert doc["slots"] > 80 and set(doc["baselines"]) == {"persistence", "same_slot_yesterday",
                                                           "same_slot_last_week", "median_7_days"}
    assert np.isfinite(doc["model"]["rmse"]) and "ratio_rmse_vs_persistence" in doc


def test_backtest_merges_several_data_files(seed_bundles, tmp_path):
    """History in one file, the period in another: same forecasts as with one file."""
    lines = SEED_CSV.read_text().splitlines()
    head, body = lines[:4], lines[4:]
    cut = next(i for i, ln in enumerate(body) if "2023-06-18T00:00:00Z" in ln.split(",")[5])
    (tmp_path / "hist.csv").write_text("\n".join(head + body[:cut]) + "\n")
    (tmp_path / "period.csv").write_text("\n".join(head + body[cut:]) + "\n")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    common = ["--start", "2023-06-18T02:00:00Z", "--end", "2023-06-18T06:00:00Z"]
    _run("backtest", "--bundle", str(seed_bundles / "lstm-1"), "--data", str(SEED_CSV), *common, "--out", str(a))
    _run("backtest", "--bundle", str(seed_bundles / "lstm-1"), "--data", str(tmp_path / "period.csv"),
         "--data", str(tmp_path / "hist.csv"), *common, "--out", str(b))
    assert a.read_text() == b.read_text() and len(a.read_text().splitlines()) == 17


def test_bad_data_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    r = subprocess.run([sys.executable, "-m", "training", "train", "--data", str(bad), "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no _time/_value or time/value columns" in r.stderr


def test_an_unknown_bundle_name_is_refused_before_training(tmp_path):
    """`--only cnn-2` used to train nothing and exit 0 with an empty summary."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "training", "train", "--data", str(SEED_CSV), "--only", "cnn-2",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice: 'cnn-2'" in r.stderr
    assert not out.exists()


def test_a_reused_model_forgets_the_previous_window(seed_bundles):
    """The fused TFLite LSTM keeps its state between invocations unless reset: a model that has run other
    windows must give exactly what a freshly loaded one gives."""
    from training.data import load

    series = load([SEED_CSV])
    issues = [series.start_ns + (30 * 96 + k * 37) * 900 * 10**9 for k in range(60)]
    for name in ("lstm-1", "lstm-96", "cnn-1"):
        reused = LoadedModel.from_dir(seed_bundles / name)
        extreme = np.full(reused.manifest["input"]["shape"], 6.0, np.float32)
        for _ in range(20):
            reused.run(extreme)
        for t in issues:
            got = reused.predict(series, t).values
            fresh = LoadedModel.from_dir(seed_bundles / name).predict(series, t).values
            np.testing.assert_array_equal(got, fresh, err_msg=f"{name} at {t}")
