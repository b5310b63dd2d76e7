"""tools/benchmarks/score_independently.py: the pandas-only cross-check, and its `--exclude-days`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SCORER = Path(__file__).resolve().parents[2] / "tools" / "benchmarks" / "score_independently.py"


def _files(tmp_path: Path) -> tuple[Path, Path]:
    """A meter counter of 21 days (a daily shape at a level that changes from day to day, plus noise) and a
    day-ahead forecast of the last 3 days that knows each day's level, except on its middle day, where it is far
    off."""
    rng = np.random.default_rng(1)
    t = pd.date_range("2023-01-01", periods=21 * 96 + 1, freq="15min", tz="UTC")
    level = np.repeat(rng.uniform(0.5, 1.5, 22), 96)[:len(t)]
    shape = (0.2 + 0.1 * np.sin(np.arange(len(t)) * 2 * np.pi / 96)) * level
    use = shape + rng.uniform(0, 0.02, len(t))
    raw = pd.DataFrame({"_time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "_value": 1000 + np.cumsum(use)})
    raw_csv = tmp_path / "raw.csv"
    raw_csv.write_text("#datatype,string\n" + raw.to_csv(index=False))
    target = t[18 * 96 + 1:]
    value = shape[18 * 96 + 1:] + 0.01
    value[96:192] += 1.0  # 2023-01-20: a day the model got wrong
    fc = pd.DataFrame({"issued_at": [(x.normalize()).strftime("%Y-%m-%dT%H:%M:%SZ") for x in target],
                       "target_time": target.strftime("%Y-%m-%dT%H:%M:%SZ"), "horizon_steps": 1,
                       "value_kwh": value})
    fc_csv = tmp_path / "cnn-96.csv"
    fc.to_csv(fc_csv, index=False)
    return raw_csv, fc_csv


def _score(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCORER), *args], check=True, text=True, stdout=subprocess.PIPE).stdout
    return next(iter(json.loads(out).values()))["day_ahead_best"]


def test_excluding_a_day_scores_the_others_only(tmp_path):
    raw_csv, fc_csv = _files(tmp_path)
    whole = _score(str(raw_csv), str(fc_csv))
    without = _score("--exclude-days", "2023-01-20", str(raw_csv), str(fc_csv))
    assert without["slots"] == whole["slots"] - 96
    assert without["mae_ratio"] < 1 < whole["mae_ratio"]  # the bad day alone made the month lose
    other = _score("--exclude-days", "2023-01-19,2023-01-21", str(raw_csv), str(fc_csv))
    assert other["slots"] < whole["slots"] and other["mae_ratio"] > whole["mae_ratio"]
