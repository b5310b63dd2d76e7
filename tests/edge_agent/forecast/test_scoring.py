"""Live skill's arithmetic (edge_agent/forecast/scoring.py) against values computed by hand: the ledger's MAE,
RMSE, bias, skill against the best baseline on the common slots, coverage, windows and forgetting; what one family's
scoring makes of a series and the forecasts given to it. No influxd: the storage side is tests/edge_agent/forecast/
test_skill.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.forecast.scoring import (
    DAY_NS,
    FAMILY,
    Ledger,
    Stats,
    baseline_key,
    day_ahead_issues,
    rolling,
    score_family,
)
from shared.schema import SLOT_NS
from shared.series import SlotSeries

NAN = math.nan
T0 = 1_700_000_000 // 900 * 900 * 10**9  # a slot end
MODEL = ("cnn", "cnn-1", "v1")
PERSIST, YESTERDAY = baseline_key("persistence"), baseline_key("same_slot_yesterday")
BASELINES = ("persistence", "same_slot_yesterday")


def ledger() -> Ledger:
    """Four slots: the model missed the last; persistence scored all, yesterday all but the first."""
    led = Ledger()
    targets = T0 + SLOT_NS * np.arange(1, 5)
    led.append(targets, targets - SLOT_NS, np.array([1.0, 1.0, 1.0, 1.0]),
               {MODEL: np.array([0.1, -0.2, 0.3, NAN]), PERSIST: np.array([0.2, 0.2, 0.2, 0.5]),
                YESTERDAY: np.array([NAN, 0.1, -0.1, 0.1])},
               covered={MODEL: np.array([1.0, 0.0, 1.0, NAN])})
    return led


def test_model_figures_and_skill_against_the_best_baseline_on_common_slots():
    st = ledger().stats(MODEL, T0, BASELINES)
    assert st.slots == 3
    assert st.mae == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert st.rmse == pytest.approx(math.sqrt((0.01 + 0.04 + 0.09) / 3))
    assert st.bias == pytest.approx((0.1 - 0.2 + 0.3) / 3)
    # on the model's slots persistence's MAE is 0.2 (3 slots), yesterday's 0.1 (2 slots): yesterday is the best,
    # and the model's MAE on those two slots is (0.2 + 0.3) / 2 = 0.25
    assert (st.baseline, st.skill_slots) == ("same_slot_yesterday", 2)
    assert st.baseline_mae == pytest.approx(0.1) and st.model_mae == pytest.approx(0.25)
    assert st.skill == pytest.approx(1 - 0.25 / 0.1)
    assert st.coverage == pytest.approx(2 / 3) and st.coverage_slots == 3
    assert st.to_dict() == {"slots": 3, "mae_kwh": 0.2, "rmse_kwh": 0.21602, "bias_kwh": 0.06667, "skill": -1.5,
                            "skill_slots": 2, "baseline": "same_slot_yesterday", "baseline_mae_kwh": 0.1,
                            "p10_p90_coverage": 0.6667, "coverage_slots": 3}


def test_a_baseline_has_no_skill_and_windows_start_after_since():
    led = ledger()
    base = led.stats(PERSIST, T0, BASELINES)
    assert (base.slots, base.mae, base.baseline, base.skill) == (4, pytest.approx(0.275), None, None)
    # slots ending after the second: the model's third slot only; persistence 0.2 vs yesterday 0.1 there
    st = led.stats(MODEL, T0 + 2 * SLOT_NS, BASELINES)
    assert (st.slots, st.mae, st.skill_slots, st.baseline) == (1, pytest.approx(0.3), 1, "same_slot_yesterday")
    assert st.skill == pytest.approx(1 - 0.3 / 0.1)
    assert led.stats(MODEL, T0 + 3 * SLOT_NS, BASELINES) is None  # its last slot was not scored
    assert led.stats(("lstm", "lstm-1", "v1"), T0, BASELINES) is None
    # a baseline with MAE 0 gives no skill (no division by zero), but still names itself
    perfect = Ledger()
    perfect.append(np.array([T0]), np.array([T0 - SLOT_NS]), np.array([1.0]), {MODEL: np.array([0.1]),
                                                                               PERSIST: np.array([0.0])})
    st = perfect.stats(MODEL, 0, BASELINES)
    assert (st.baseline, st.baseline_mae, st.skill) == ("persistence", 0.0, None)


def test_appending_aligns_new_forecasters_and_forgetting_drops_the_empty_ones():
    led = ledger()
    later = T0 + 5 * SLOT_NS
    led.append(np.array([later]), np.array([later - SLOT_NS]), np.array([2.0]), {("lstm", "lstm-1", "v1"):
                                                                                  np.array([0.4])})
    assert len(led) == 5 and np.isnan(led.errors[MODEL][-1]) and np.isnan(led.errors[("lstm", "lstm-1", "v1")][:4]).all()
    led.forget_until(T0 + 3 * SLOT_NS)  # the model's last scored slot ends at T0 + 3 slots: it is forgotten
    assert led.targets.tolist() == [T0 + 4 * SLOT_NS, later]
    assert MODEL not in led.errors and MODEL not in led.covered and PERSIST in led.errors


def test_rolling_windows_hold_what_ended_in_the_last_1_7_30_days():
    led = Ledger()
    targets = np.array([T0 - 20 * DAY_NS, T0 - 3 * DAY_NS, T0])
    led.append(targets, targets - SLOT_NS, np.ones(3), {PERSIST: np.array([0.3, 0.2, 0.1])})
    figures = rolling({1: led, 96: Ledger()}, T0)
    windows = figures[1][PERSIST]
    assert {w: (st.slots, round(st.mae, 6)) for w, st in windows.items()} == {
        "1d": (1, 0.1), "7d": (2, 0.15), "30d": (3, 0.2)}
    assert figures[96] == {}


def series_of(values: list[float], start_ns: int) -> SlotSeries:
    return SlotSeries(start_ns, np.array(values, float))


def test_next_slot_scoring_errors_of_models_and_baselines_and_the_band():
    """Slots of 1, 2, …: persistence is off by −1 each slot; a model's forecast and its band are scored where given."""
    n = 96 + 8
    start = T0 - (n - 1) * SLOT_NS
    series = series_of([float(i + 1) for i in range(n)], start)
    lo = T0 - 3 * SLOT_NS  # score the targets T0 − 2, T0 − 1, T0 (slots)
    t1, t2 = lo + SLOT_NS, lo + 2 * SLOT_NS
    actual1, actual2 = series.values[series.index_of(t1)], series.values[series.index_of(t2)]
    rows = {MODEL: {t1: (actual1 + 0.5, t1 - SLOT_NS, actual1 - 1.0, actual1 + 1.0, 1.0),
                    t2: (actual2 - 0.25, t2 - SLOT_NS, actual2 + 0.1, actual2 + 0.2, 2.0)}}
    new = score_family(FAMILY[1], lo, T0, series, rows, lambda t: False)
    assert new.targets.tolist() == [t1, t2, T0] and new.issued.tolist() == [t1 - SLOT_NS, t2 - SLOT_NS, T0 - SLOT_NS]
    assert new.errors[MODEL][:2].tolist() == [0.5, -0.25] and np.isnan(new.errors[MODEL][2])
    assert new.errors[PERSIST].tolist() == [-1.0, -1.0, -1.0]
    assert new.errors[YESTERDAY].tolist() == [-96.0, -96.0, -96.0]
    assert baseline_key("same_slot_last_week") not in new.errors  # no history a week back: nothing scored
    # inside [P10, P90] on the first slot, not on the second (the band lay above the actual)
    assert new.covered[MODEL][:2].tolist() == [1.0, 0.0] and np.isnan(new.covered[MODEL][2])
    assert np.isfinite(new.needed[MODEL][:2]).all()
    # a slot whose consumption is unknown is not scored (and stays unscored)
    gappy = series_of([v if i != series.index_of(t2) else NAN for i, v in enumerate(series.values)], start)
    new = score_family(FAMILY[1], lo, T0, gappy, rows, lambda t: False)
    assert new.targets.tolist() == [t1, T0]


def test_day_ahead_slots_belong_to_their_issue_from_the_forecasts_or_the_schedule():
    midnight = T0 // DAY_NS * DAY_NS
    is_issue = lambda t: t % DAY_NS == 0  # noqa: E731  (the day-ahead issue at 00:00 UTC)
    targets = midnight + SLOT_NS * np.arange(1, 4)
    pos = {int(t): i for i, t in enumerate(targets)}
    assert day_ahead_issues(targets, {}, pos, is_issue).tolist() == [midnight] * 3
    # what a forecast says wins over the schedule (an issue written at 23:45, e.g. before a timezone change)
    rows = {MODEL: {int(targets[1]): (1.0, midnight - SLOT_NS, None, None, 1.0)}}
    assert day_ahead_issues(targets, rows, pos, is_issue).tolist() == [midnight, midnight - SLOT_NS, midnight]
    assert day_ahead_issues(targets, {}, pos, lambda t: False).tolist() == [0, 0, 0]  # no issue: not scored
    # scored against the same slot yesterday as known at the issue: the series is 1 kWh yesterday, 3 kWh today
    n = 3 * 96
    start = midnight - (n - 1 - 3) * SLOT_NS
    series = series_of([1.0] * (n - 3) + [3.0] * 3, start)
    new = score_family(FAMILY[96], midnight, midnight + 3 * SLOT_NS, series, {}, is_issue)
    assert new.errors[YESTERDAY].tolist() == [-2.0, -2.0, -2.0]
    assert "persistence" not in FAMILY[96].baselines and PERSIST not in new.errors
    assert Stats(1, 0.0, 0.0, 0.0).to_dict() == {"slots": 1, "mae_kwh": 0.0, "rmse_kwh": 0.0, "bias_kwh": 0.0}
