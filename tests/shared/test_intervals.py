"""P10/P90 bands (shared.intervals): calibration, the band's properties, the manifest's checks, the edge's
inference with and without a band (older bundles)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from shared import intervals as iv
from shared import manifest as mf
from shared.inference import LoadedModel
from shared.schema import SLOT_NS
from shared.series import counter_to_slots, parse_time_ns, read_csv

DAY0 = parse_time_ns("2023-07-01T00:00:00Z")


def _synthetic(n_days: int, seed: int) -> tuple[np.ndarray, ...]:
    """Day-ahead forecasts issued at midnight: noise proportional to the level, and twice as large 16-20 h."""
    rng = np.random.default_rng(seed)
    steps = np.tile(np.arange(1, 97), n_days)
    issues = np.repeat(DAY0 + np.arange(n_days) * 96 * SLOT_NS, 96)
    target = issues + steps * SLOT_NS
    p50 = rng.uniform(0.1, 1.0, len(steps))
    busy = ((steps - 1) // 4 >= 16) & ((steps - 1) // 4 < 20)
    actual = p50 + (p50 + iv.SCALE_OFFSET_KWH) * rng.normal(0, np.where(busy, 0.4, 0.2))
    return p50, actual, target, steps, busy


def test_calibrated_band_covers_80_percent_of_new_data_and_follows_the_noise():
    p50, actual, target, steps, _ = _synthetic(120, seed=1)
    doc = iv.validate(iv.calibrate(p50, actual, target, steps, 96), 96)
    assert len(doc["table"]) == iv.TOD_GROUPS * 4 and doc["calibration_slots"] == len(p50)
    p50n, actualn, targetn, stepsn, busy = _synthetic(120, seed=2)  # fresh draws
    p10, p90 = iv.band(doc, p50n, targetn, stepsn)
    assert np.all(p10 >= 0) and np.all(p10 <= p50n) and np.all(p50n <= p90)
    cov = iv.coverage(actualn, p10, p90)
    assert 0.78 <= cov["coverage"] <= 0.82 and cov["n"] == len(p50n)
    width = p90 - p10
    rel = width / (p50n + iv.SCALE_OFFSET_KWH)
    assert rel[busy].mean() > 1.7 * rel[~busy].mean()  # the 16-20 h group learned its larger noise


def test_unknown_actuals_are_left_out_and_too_few_refused():
    p50, actual, target, steps, _ = _synthetic(30, seed=3)
    actual[::2] = np.nan
    assert iv.calibrate(p50, actual, target, steps, 96)["calibration_slots"] == (len(p50) + 1) // 2
    with pytest.raises(iv.IntervalError, match="known validation slots"):
        iv.calibrate(p50[:20], actual[:20], target[:20], steps[:20], 96)


def test_groups_follow_the_targets_time_of_day_and_the_step():
    doc = {"tod_groups": 6, "step_edges": [2, 5, 17]}
    t = np.array([parse_time_ns(x) for x in ("2023-07-01T00:15:00Z", "2023-07-01T04:00:00Z",
                                                "2023-07-01T04:15:00Z", "2023-07-02T00:00:00Z")])
    assert iv.groups(doc, t, np.array([1, 1, 5, 96])).tolist() == [0, 0, 4 + 2, 5 * 4 + 3]
    assert iv.groups({"tod_groups": 6, "step_edges": []}, t, np.ones(4)).tolist() == [0, 0, 1, 5]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["table"].pop(), "table must hold"),
    (lambda d: d["table"][0].__setitem__(0, float("nan")), "finite"),
    (lambda d: d["table"][0].reverse(), "q10 ≤ q90"),
    (lambda d: d.__setitem__("scale_offset_kwh", 0), "scale_offset_kwh"),
    (lambda d: d.__setitem__("step_edges", [5, 2]), "step_edges"),
    (lambda d: d.__setitem__("method", "quantile_heads"), "method"),
])
def test_manifest_refuses_a_bad_band(seed_bundles, mutate, message):
    doc = json.loads((seed_bundles / "cnn-96" / "manifest.json").read_text())
    assert "intervals" in doc  # training writes it
    bad = copy.deepcopy(doc)
    mutate(bad["intervals"])
    with pytest.raises(mf.ManifestError, match=message):
        mf.validate(bad)


def test_edge_inference_gives_the_band_and_older_bundles_run_without_one(seed_bundles):
    series = counter_to_slots(read_csv("data/seed_house/raw_data.csv"))
    issue = parse_time_ns("2023-07-05T00:00:00Z")
    for name in ("cnn-1", "cnn-96"):
        model = LoadedModel.from_dir(seed_bundles / name)
        fc = model.predict(series, issue)
        assert fc.p10 is not None and len(fc.p10) == len(fc.values) == model.spec.horizon
        assert np.all(fc.p10 <= fc.values) and np.all(fc.values <= fc.p90) and np.all(fc.p10 >= 0)
        assert np.all(fc.p90 > fc.p10)
        old = json.loads((seed_bundles / name / "manifest.json").read_text())
        del old["intervals"]  # a schema_version 1 bundle from before the bands
        old_model = LoadedModel(mf.validate(old), (seed_bundles / name / "model.tflite").read_bytes())
        fc_old = old_model.predict(series, issue)
        assert fc_old.p10 is None and fc_old.p90 is None
        np.testing.assert_array_equal(fc_old.values, fc.values)


def test_climatology_is_the_same_slots_quantiles_over_28_days():
    series = counter_to_slots(read_csv("data/seed_house/raw_data.csv"))
    last = series.index_of(parse_time_ns("2023-07-05T00:00:00Z"))
    lo, hi = iv.climatology(series.values, last, np.array([last + 1, last + 50]))
    for k, t in enumerate((last + 1, last + 50)):
        pool = series.values[[t - 96 * d for d in range(1, 29)]]
        assert lo[k] == pytest.approx(np.nanquantile(pool, 0.1)) and hi[k] == pytest.approx(np.nanquantile(pool, 0.9))


def test_needed_scale_is_the_scale_that_just_covers_the_actual():
    doc = iv.calibrate(*_synthetic(60, seed=4)[:4], 96)
    p50, actual, target, steps, _ = _synthetic(10, seed=5)
    for written_with in (1.0, 1.7):  # the scale a forecast was written with is taken out again
        p10, p90 = iv.band(doc, p50, target, steps, written_with)
        need = iv.needed_scale(actual, p50, p10, p90, written_with)
        inside = (actual >= p10) & (actual <= p90)
        assert np.array_equal(need <= written_with + 1e-9, inside)
        lo, hi = iv.band(doc, p50, target, steps, float(np.max(need[np.isfinite(need)])) * 1.0001)
        real = actual >= 0  # (the synthetic noise goes below 0 kWh, where no band reaches: P10 ≥ 0)
        assert np.all(((actual >= lo) & (actual <= hi))[real])  # the largest needed scale covers every slot
    need = iv.needed_scale(np.array([1.0, np.nan, 0.5, 0.5]), np.array([0.5, 0.5, 0.5, 0.4]),
                           np.array([0.4, 0.4, 0.5, 0.4]), np.array([0.5, 0.7, 0.5, 0.4]))
    assert need[1] != need[1] and need[2] == 0.0 and need[0] == np.inf and need[3] == np.inf


def test_recalibrated_scale_covers_80_percent_of_recent_slots_within_bounds():
    rng = np.random.default_rng(6)
    assert iv.recalibrated_scale(rng.uniform(0, 2, iv.RECALIBRATION_MIN_SLOTS - 1)) == 1.0  # too few: the table
    need = rng.uniform(0, 2, 672)
    s = iv.recalibrated_scale(np.concatenate([need, [np.nan] * 50]))
    assert abs(np.mean(need <= s) - 0.8) < 0.01 and 1.5 < s < 1.7
    assert iv.recalibrated_scale(np.full(200, 0.01)) == iv.SCALE_BOUNDS[0]
    assert iv.recalibrated_scale(np.full(200, np.inf)) == iv.SCALE_BOUNDS[1]


def test_a_drifting_error_is_followed_within_days():
    """Errors twice as large as in calibration: a fixed table covers far less than 80 %, the recalibrated band
    (a week of needed scales, as the edge and the backtest use them) about 80 % after the first days."""
    doc = iv.calibrate(*_synthetic(60, seed=7)[:4], 96)
    p50, actual, target, steps, _ = _synthetic(28, seed=8)
    actual = p50 + 2 * (actual - p50)
    needs: list[np.ndarray] = []
    fixed, recal = [], []
    for day in range(28):
        s = slice(day * 96, (day + 1) * 96)
        scale = iv.recalibrated_scale(np.concatenate(needs[-iv.RECALIBRATION_DAYS:]) if needs else np.zeros(0))
        lo, hi = iv.band(doc, p50[s], target[s], steps[s], scale)
        lo1, hi1 = iv.band(doc, p50[s], target[s], steps[s])
        if day >= 3:
            recal.append(np.mean((actual[s] >= lo) & (actual[s] <= hi)))
            fixed.append(np.mean((actual[s] >= lo1) & (actual[s] <= hi1)))
        needs.append(iv.needed_scale(actual[s], p50[s], lo, hi, scale))
    assert np.mean(fixed) < 0.6 and abs(np.mean(recal) - 0.8) < 0.04
