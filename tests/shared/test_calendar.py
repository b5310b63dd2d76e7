"""Public holidays as a calendar input (shared.calendar, shared.window's `holiday` feature), the away profile
(shared.away)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import away
from shared import manifest as mf
from shared.calendar import CalendarError, HolidayCalendar
from shared.series import SlotSeries, counter_to_slots, parse_time_ns, read_csv
from shared.window import HOLIDAY, WindowSpec, build_raw, feature_names

BERLIN = HolidayCalendar("DE", None, "Europe/Berlin")


def _ns(*times: str) -> np.ndarray:
    return np.array([parse_time_ns(t) for t in times])


def test_a_slot_is_a_holiday_by_its_local_date():
    # Christmas Day in Berlin (UTC+1) runs 2022-12-24T23:00Z … 2022-12-25T23:00Z; slots are labelled by their end
    got = BERLIN.is_holiday(_ns("2022-12-24T23:00:00Z", "2022-12-24T23:15:00Z", "2022-12-26T22:45:00Z",
                                "2022-12-26T23:00:00Z", "2022-12-26T23:15:00Z", "2023-05-29T12:00:00Z",
                                "2023-05-30T12:00:00Z"))
    assert got.tolist() == [0, 1, 1, 1, 0, 1, 0]  # 26 Dec is a holiday too; Whit Monday; the Tuesday after is not
    assert HolidayCalendar("DE", None, "UTC").is_holiday(_ns("2022-12-24T23:15:00Z")).tolist() == [0]
    # a subdivision: Corpus Christi 2023-06-08 is a holiday in Hesse, not nationwide
    assert HolidayCalendar("DE", "HE", "Europe/Berlin").is_holiday(_ns("2023-06-08T12:00:00Z")).tolist() == [1]
    assert BERLIN.is_holiday(_ns("2023-06-08T12:00:00Z")).tolist() == [0]
    # a half-hour offset (India, UTC+5:30): Republic Day starts at 18:30Z the day before
    assert HolidayCalendar("IN", None, "Asia/Kolkata").is_holiday(
        _ns("2023-01-25T18:30:00Z", "2023-01-25T18:45:00Z")).tolist() == [0, 1]


def test_bad_calendars_name_the_problem():
    with pytest.raises(CalendarError, match="ISO 3166"):
        HolidayCalendar("germany")
    with pytest.raises(CalendarError, match="timezone"):
        HolidayCalendar("DE", None, "Mars/Olympus")
    with pytest.raises(CalendarError, match="unknown country 'XX'"):
        HolidayCalendar("XX").check()


def test_window_holiday_feature_is_computed_from_the_declared_calendar():
    series = counter_to_slots(read_csv("data/seed_house/raw_data.csv"))
    with pytest.raises(ValueError, match="holidays calendar"):
        WindowSpec("day", 96, 96, 0.3, 0.2, features=[*feature_names("day"), HOLIDAY])
    spec = WindowSpec("day", 96, 96, 0.3, 0.2, features=[*feature_names("day"), HOLIDAY],
                      holidays=BERLIN.to_dict())
    issue = parse_time_ns("2023-05-28T22:00:00Z")  # local midnight before Whit Monday
    raw, _ = build_raw(spec, series, issue)
    col = raw[:, spec.features.index(HOLIDAY)]
    assert col.tolist() == [1.0] * 96  # every target slot of the local day
    raw2, _ = build_raw(spec, series, issue + 96 * 900 * 10**9)
    assert raw2[:, spec.features.index(HOLIDAY)].sum() == 0
    np.testing.assert_array_equal(np.delete(raw, spec.features.index(HOLIDAY), axis=1),
                                  build_raw(WindowSpec("day", 96, 96, 0.3, 0.2), series, issue)[0])
    nxt = WindowSpec("next", 16, 1, 0.3, 0.2, features=[*feature_names("next"), HOLIDAY], holidays=BERLIN.to_dict())
    raw_n, _ = build_raw(nxt, series, issue)  # the target slot ends 22:15Z: 00:07 local on Whit Monday
    assert raw_n[:, nxt.features.index(HOLIDAY)].tolist() == [0.0] * 15 + [1.0]  # the step of the target slot


def test_manifest_with_holidays_round_trips_and_an_unknown_country_is_a_bad_manifest(seed_bundles):
    doc = json.loads((seed_bundles / "cnn-96" / "manifest.json").read_text())
    w = doc["window"]
    assert w.get("holidays") is None and HOLIDAY not in w["features"]  # the default: no holidays
    w["features"] = [*w["features"], HOLIDAY]
    w["holidays"] = BERLIN.to_dict()
    doc["input"]["shape"][-1] += 1
    assert mf.window_spec(mf.validate(doc)).calendar == BERLIN
    w["holidays"] = {"country": "XX", "subdivision": None, "timezone": "UTC"}
    with pytest.raises(mf.ManifestError, match="window.holidays.*XX"):
        mf.validate(doc)
    del w["holidays"]
    with pytest.raises(mf.ManifestError, match="holidays calendar"):
        mf.validate(doc)


def test_away_profile_is_the_low_end_of_the_same_time_of_day():
    series = counter_to_slots(read_csv("data/seed_house/raw_data.csv"))
    issue = parse_time_ns("2023-07-05T00:00:00Z")
    p10, p50, p90 = away.profile(series, issue, 96)
    last = series.index_of(issue)
    t = last + 60
    pool = series.values[[t - 96 * d + h for d in range(1, 29) for h in range(-4, 5)]]
    assert p50[59] == pytest.approx(np.nanquantile(pool, 0.10))
    assert p10[59] == pytest.approx(np.nanquantile(pool, 0.02)) and p90[59] == pytest.approx(np.nanquantile(pool, 0.25))
    assert np.all(p10 <= p50) and np.all(p50 <= p90)
    typical = np.nanmedian(series.values[last - 28 * 96:last])
    assert np.nanmean(p50) < 0.8 * typical  # lower than what the occupied house usually draws
    empty = SlotSeries(series.start_ns, np.full(len(series.values), np.nan))
    assert np.isnan(away.profile(empty, issue, 96)[1]).all()  # no history: NaN, the caller keeps its forecast
