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
