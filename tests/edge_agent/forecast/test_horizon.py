"""The forecast core (edge_agent/forecast/horizon.py) without influxd, a broker or an agent: the seed bundles in the
real TFLite interpreter on the real meter's slots, the real guard, and the decisions checked one by one — which
forecast serves, from which source, with which fallback reason and provenance, and what is counted.

Two stand-ins, both around a real bundle: a weather bundle (`cnn-96-weather`: the seed bundles have none, and
training one takes minutes) that checks it is given the temperature and runs cnn-96's interpreter, and a bundle
whose manifest scaling is NaN, so that the real interpreter's output decodes to a non-finite forecast."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from edge_agent.forecast.guard import SHADOW, Guard, GuardConfig
from edge_agent.forecast.horizon import HorizonResult, best, decide, mark_stand_ins, served_first
from edge_agent.forecast.scoring import Stats
from shared import manifest as mf
from shared.baselines import BASELINES
from shared.inference import Forecast, LoadedModel
from shared.schema import SLOT_NS
from shared.series import SlotSeries, parse_time_ns, read_csv, slots_from_counter
from tests.helpers.forecast import CSV

ISSUE = parse_time_ns("2023-07-05T12:00:00Z")
DAYS = 9
SOURCE = "forecast issued 2023-07-05T06:00:00Z (home assistant), measured until 2023-07-05T11:45:00Z"
STALE = "the temperature forecast is stale (issued 2023-07-03T06:00:00Z, older than 24 h)"


@pytest.fixture(scope="module")
def models(seed_bundles: Path) -> dict[str, LoadedModel]:
    return {name: LoadedModel.from_dir(seed_bundles / name) for name in ("cnn-1", "lstm-1", "cnn-96", "lstm-96")}


@pytest.fixture(scope="module")
def series() -> SlotSeries:
    """The real meter's slots for nine days up to ISSUE (the CSV holds the counter at every slot end)."""
    rows = read_csv(CSV)
    counter = dict(zip(rows.times.tolist(), rows.values.tolist(), strict=True))
    n = DAYS * 96
    bounds = ISSUE - SLOT_NS * np.arange(n, -1, -1)
    c = np.array([counter.get(int(t), np.nan) for t in bounds])
    s = SlotSeries(int(bounds[1]), slots_from_counter(c))
    assert np.isfinite(s.values).all() and s.end_ns[-1] == ISSUE
    return s


def gap(series: SlotSeries, start: str, end: str) -> SlotSeries:
    """The series with the slots ending in (start, end] unknown."""
    values = series.values.copy()
    ends = series.end_ns
    values[(ends > parse_time_ns(start)) & (ends <= parse_time_ns(end))] = np.nan
    return SlotSeries(series.start_ns, values)


def no_guard() -> Guard:
    return Guard(GuardConfig())


def lost(guard: Guard, name: str, model: LoadedModel, baseline: str) -> None:
    """Judge `name` with figures that lost to `baseline` (the real guard's rule: model MAE > baseline MAE)."""
    st = Stats(500, 0.2, 0.25, 0.1, skill=-1.0, skill_slots=500, baseline=baseline, model_mae=0.2, baseline_mae=0.1)
    loaded = {name: (model.spec.horizon, model.manifest["kind"], model.manifest["version"])}
    guard.update(ISSUE, loaded, lambda h, key, since: st)
    assert guard.verdicts[name].state == SHADOW


def scales(asked: list[str], value: float = 1.0):
    def band_scale(name: str) -> float:
        asked.append(name)
        return value
    return band_scale


class WithTemperature:
    """A weather bundle around a real one: it must be given the temperature, then runs the real interpreter."""

    def __init__(self, inner: LoadedModel, complete: bool = True):
        self.inner, self.complete = inner, complete
        self.manifest = inner.manifest | {"name": inner.manifest["name"] + "-weather"}
        self.spec = inner.spec
        self.given: list[SlotSeries | None] = []

    @property
    def needs_temperature(self) -> bool:
        return True

    def predict(self, series, issue_ns, band_scale=1.0, temperature=None) -> Forecast:
        self.given.append(temperature)
        assert temperature is not None
        fc = self.inner.predict(series, issue_ns, band_scale)
        return Forecast(fc.values, fc.complete and self.complete, fc.p10, fc.p90)


def test_every_model_of_the_horizon_serves_as_the_interpreter_forecast_it(models, series):
    asked: list[str] = []
    d = decide(1, series, ISSUE, models, None, "", no_guard(), scales(asked, 1.5))
    assert [(r.name, r.model, r.horizon, r.fallback, r.input_complete, r.shadow) for r in d.results] == [
        ("cnn-1", "cnn", 1, "", True, False), ("lstm-1", "lstm", 1, "", True, False)]
    assert d.counters == ["forecast_model_1"] and not d.failed and not d.reasons and not d.skipped
    assert asked == ["cnn-1", "lstm-1"]  # both have a band: its recalibration is asked for, per bundle
    for r in d.results:  # the core passes the series and the scale through: the interpreter's own forecast
        direct = models[r.name].predict(series, ISSUE, band_scale=1.5)
        np.testing.assert_array_equal(r.values, direct.values)
        np.testing.assert_array_equal(r.p90, direct.p90)
        assert r.band_scale == 1.5 and r.version == models[r.name].manifest["version"]
    day = decide(96, series, ISSUE, models, None, "", no_guard(), scales([]))
    assert [r.name for r in day.results] == ["cnn-96", "lstm-96"] and len(day.results[0].values) == 96


def test_an_incomplete_window_serves_the_next_baseline_with_history_and_says_so(models, series):
    """The last six hours missing: the models do not run; persistence has no last slot, so the same slot yesterday
    serves the next slot; the day ahead gets its usual 7-day median — neither had its intended input."""
    gappy = gap(series, "2023-07-05T06:00:00Z", "2023-07-05T12:00:00Z")
    d = decide(1, gappy, ISSUE, models, None, "", no_guard(), scales([]))
    [r] = d.results
    assert (r.name, r.model, r.version) == ("baseline-1", "baseline", "same_slot_yesterday")
    assert r.fallback == "cnn-1: input window incomplete; lstm-1: input window incomplete"
    assert r.input_complete is False
    assert r.values[0] == series.values[gappy.index_of(ISSUE + SLOT_NS - 96 * SLOT_NS)]
    assert d.counters == ["incomplete_windows", "incomplete_windows", "forecast_baseline_1"]
    day = decide(96, gappy, ISSUE, models, None, "", no_guard(), scales([]))
    [r] = day.results
    assert (r.version, r.input_complete) == ("median_7_days", False)
    np.testing.assert_array_equal(r.values, BASELINES["median_7_days"](gappy, ISSUE, 96))
    # without models the baseline had its intended input: complete, and the reason is "no model"
    none = decide(1, series, ISSUE, {}, None, "", no_guard(), scales([]))
    assert [(r.version, r.fallback, r.input_complete) for r in none.results] == [("persistence", "no model", True)]


def test_a_shadowed_model_is_written_not_served_and_the_baseline_it_lost_to_serves(models, series):
    guard = no_guard()
    lost(guard, "cnn-1", models["cnn-1"], "same_slot_last_week")
    reason = guard.verdicts["cnn-1"].reason
    only = {"cnn-1": models["cnn-1"]}
    d = decide(1, series, ISSUE, only, None, "", guard, scales([]))
    assert [(r.name, r.version, r.shadow, r.fallback, r.input_complete) for r in d.results] == [
        ("baseline-1", "same_slot_last_week", False, reason, True), ("cnn-1", guard.verdicts["cnn-1"].version,
                                                                     True, "", True)]
    np.testing.assert_array_equal(d.results[0].values, BASELINES["same_slot_last_week"](series, ISSUE, 1))
    assert d.counters == ["forecast_baseline_1"] and d.served == d.results[:1]
    # another model of the horizon serving: no baseline, the shadow still written
    both = decide(1, series, ISSUE, {"cnn-1": models["cnn-1"], "lstm-1": models["lstm-1"]}, None, "", guard,
                  scales([]))
    assert [(r.name, r.shadow) for r in both.results] == [("lstm-1", False), ("cnn-1", True)]
    assert both.counters == ["forecast_model_1"]
    # the baseline it lost to has no history (last week missing): the fallback order stands in, incomplete
    no_week = gap(series, "2023-06-28T11:00:00Z", "2023-06-28T13:00:00Z")
    d = decide(1, no_week, ISSUE, only, None, "", guard, scales([]))
    assert [(r.version, r.input_complete) for r in d.served] == [("persistence", False)]
    # a new version is not the one in the shadow: it serves
    newer = copy.copy(models["cnn-1"])
    newer.manifest = models["cnn-1"].manifest | {"version": "29990101T000000Z"}
    d = decide(1, series, ISSUE, {"cnn-1": newer}, None, "", guard, scales([]))
    assert [(r.name, r.version, r.shadow) for r in d.results] == [("cnn-1", "29990101T000000Z", False)]


def test_a_weather_bundle_without_its_temperature_leaves_its_twin_serving_with_the_reason(models, series):
    weather = WithTemperature(models["cnn-96"])
    loaded = {"cnn-96": models["cnn-96"], "cnn-96-weather": weather}
    d = decide(96, series, ISSUE, loaded, None, STALE, no_guard(), scales([]))
    assert weather.given == []  # not run without the temperature
    [r] = d.results
    assert (r.name, r.fallback, r.temperature) == ("cnn-96", f"cnn-96-weather: {STALE}; served without the "
                                                             "temperature", "")
    assert d.counters == ["weather_unavailable", "forecast_model_96"]
    # with the temperature: both forecast, the weather bundle says which temperature it had, and is published first
    temp = SlotSeries(series.start_ns, np.full(len(series.values) + 96, 18.0))
    d = decide(96, series, ISSUE, loaded, temp, SOURCE, no_guard(), scales([]))
    assert [(r.name, r.fallback, r.temperature) for r in d.results] == [("cnn-96", "", ""),
                                                                       ("cnn-96-weather", "", SOURCE)]
    assert len(weather.given) == 1 and weather.given[0] is temp
    assert [r.name for r in served_first(d.results)] == ["cnn-96-weather", "cnn-96"]
    assert best(d.results, 96, ["cnn", "lstm"]).name == "cnn-96-weather"
    # alone and stale: the baseline serves, and a gap in the temperature is no gap in the baseline's input
    d = decide(96, series, ISSUE, {"cnn-96-weather": weather}, None, STALE, no_guard(), scales([]))
    assert [(r.version, r.fallback, r.input_complete) for r in d.results] == [
        ("median_7_days", f"cnn-96-weather: {STALE}", True)]
    # given a temperature with a gap in the last days: incomplete, with where the temperature came from
    gappy = WithTemperature(models["cnn-96"], complete=False)
    d = decide(96, series, ISSUE, {"cnn-96-weather": gappy}, temp, SOURCE, no_guard(), scales([]))
    assert [(r.version, r.input_complete) for r in d.results] == [("median_7_days", True)]
    assert d.results[0].fallback == ("cnn-96-weather: input window incomplete (consumption, or the temperature of "
                                     f"the last days: {SOURCE})")


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # the NaN scaling
def test_a_failing_model_costs_neither_the_others_nor_the_order(models, series, seed_bundles):
    doc = mf.load(seed_bundles / "cnn-1")
    doc["window"]["scaling"]["std"] = doc["window"]["std"] = float("nan")  # the real interpreter, decoded to NaN
    broken = LoadedModel(doc, (seed_bundles / "cnn-1" / "model.tflite").read_bytes())
    d = decide(1, series, ISSUE, {"cnn-1": broken, "lstm-1": models["lstm-1"]}, None, "", no_guard(), scales([]))
    assert [r.name for r in d.results] == ["lstm-1"] and d.results[0].fallback == ""
    assert [(name, str(exc)) for name, exc in d.failed] == [("cnn-1", "non-finite forecast")]
    assert d.counters == ["inference_errors", "forecast_model_1"]
    alone = decide(1, series, ISSUE, {"cnn-1": broken}, None, "", no_guard(), scales([]))
    assert [(r.version, r.fallback, r.input_complete) for r in alone.results] == [
        ("persistence", "cnn-1: ValueError: non-finite forecast", True)]

    def failing_scale(name: str) -> float:
        raise RuntimeError("ledger gone")
    d = decide(1, series, ISSUE, {"lstm-1": models["lstm-1"]}, None, "", no_guard(), failing_scale)
    assert [r.version for r in d.results] == ["persistence"] and d.reasons == ["lstm-1: RuntimeError: ledger gone"]


def test_a_fresh_install_gets_no_day_ahead_forecast_and_no_invented_one(series):
    young = SlotSeries(ISSUE - 39 * SLOT_NS, series.until(ISSUE).values[-40:])  # ten hours of history
    d = decide(96, young, ISSUE, {}, None, "", no_guard(), scales([]))
    assert d.results == [] and d.skipped and d.counters == ["forecast_skipped_no_data"]
    nxt = decide(1, young, ISSUE, {}, None, "", no_guard(), scales([]))
    assert [r.version for r in nxt.results] == ["persistence"] and not nxt.skipped


def test_stand_ins_and_best_follow_the_preferred_kinds():
    v = np.ones(96)
    made = [HorizonResult("cnn-96", "cnn", "v", 96, v), HorizonResult("lstm-96", "lstm", "v", 96, v)]
    mark_stand_ins(made, ["lstm-96-weather: no [weather] section", "cnn-1: input window incomplete"])
    assert [r.fallback for r in made] == ["", "lstm-96-weather: no [weather] section; served without the temperature"]
    assert best(made, 96, ["lstm", "cnn"]).name == "lstm-96" and best(made, 96, ["cnn", "lstm"]).name == "cnn-96"
    shadow = [HorizonResult("cnn-96", "cnn", "v", 96, v, shadow=True), HorizonResult("baseline-96", "baseline",
                                                                                     "median_7_days", 96, v)]
    assert best(shadow, 96, ["cnn", "lstm"]).name == "baseline-96" and best(shadow, 1, ["cnn"]) is None
