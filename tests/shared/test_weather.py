"""The temperature input (shared/weather.py): local days across DST, day means, the features as the window computes
them, what is known at an issue time, readings to slots; the local-slots CSV reader (DST repeats, duplicated days)."""

from __future__ import annotations

import numpy as np
import pytest

from shared import weather as wx
from shared.schema import SLOT_NS
from shared.series import SlotSeries, parse_time_ns
from shared.window import WindowSpec, build_input, build_raw, feature_names
from training.data import read_local_slots

HOUR = 3600 * 10**9
DAY = 24 * HOUR


def test_local_day_follows_the_timezone_across_both_dst_changes():
    # Zurich: UTC+1 in winter, UTC+2 in summer; a slot belongs to the local date of its middle
    ends = np.array([parse_time_ns(t) for t in (
        "2021-03-27T23:15:00Z",  # middle 23:07:30 UTC = 00:07:30 CET on the 28th
        "2021-03-27T23:00:00Z",  # middle 22:52:30 UTC = 23:52:30 CET on the 27th
        "2021-10-30T22:15:00Z",  # middle 22:07:30 UTC = 00:07:30 CEST on the 31st
        "2021-10-30T22:00:00Z",  # 23:52:30 CEST on the 30th
    )])
    days = wx.local_day(ends, "Europe/Zurich")
    base = parse_time_ns("2021-03-28T00:00:00Z") // DAY
    autumn = parse_time_ns("2021-10-31T00:00:00Z") // DAY
    assert days.tolist() == [base, base - 1, autumn, autumn - 1]
    assert wx.local_day(ends, "UTC").tolist() == [base - 1, base - 1, autumn - 1, autumn - 1]


def _daily(start: str, temps: list[float], tz: str = "UTC") -> SlotSeries:
    """A temperature series holding each (local) day's value on all its slots."""
    t0 = parse_time_ns(start)
    ends = t0 + SLOT_NS * np.arange(1, 96 * len(temps) + 1)
    days = wx.local_day(ends, tz)
    return SlotSeries(t0 + SLOT_NS, np.array(temps + [np.nan])[np.minimum(days - days[0], len(temps))])


def test_features_of_a_day_ahead_window_are_the_days_temperatures():
    temps = [float(t) for t in range(10)]  # day k (UTC) holds k °C
    temp = _daily("2023-01-01T00:00:00Z", temps)
    issue = parse_time_ns("2023-01-09T00:00:00Z")  # targets: day 8 (all 96 slots)
    ends = issue + SLOT_NS * np.arange(1, 97)
    spec = wx.WeatherSpec("UTC", heating_base_c=18.0)
    f = wx.features(spec, list(wx.TEMPERATURE_FEATURES), temp, ends)
    assert np.all(f["temp_day"] == 8) and np.all(f["temp_day_1d"] == 7) and np.all(f["temp_day_7d"] == 4)
    assert np.all(f["hdd_day"] == 10) and np.all(f["cdd_day"] == 0)
    assert np.all(f["temp_hour"] == 8) and np.all(f["hdh"] == 10)
    # unknown temperature: NaN, and too few of the last 7 days known: NaN too
    missing = SlotSeries(temp.start_ns, np.where(temp.end_ns < parse_time_ns("2023-01-06T00:00:00Z"), np.nan, temp.values))
    g = wx.features(spec, ["temp_day", "temp_day_7d"], missing, ends)
    assert np.all(g["temp_day"] == 8) and np.all(np.isnan(g["temp_day_7d"]))  # 3 of the 7 days known
    assert all(np.isnan(v).all() for v in wx.features(spec, ["temp_day"], None, ends).values())


def test_day_mean_needs_half_the_day_and_known_at_splits_past_and_forecast():
    temp = _daily("2023-01-01T00:00:00Z", [0.0, 2.0, 4.0, 6.0])
    issue = parse_time_ns("2023-01-03T12:00:00Z")
    forecast = SlotSeries(temp.start_ns, temp.values + 10.0)
    known = wx.known_at(temp, forecast, issue)
    assert known.index_of(issue) == wx.HISTORY_SLOTS - 1
    assert known.values[known.index_of(issue)] == 4.0 and known.values[known.index_of(issue) + 1] == 14.0
    # day 3's mean: half measured (4) and half forecast (14)
    day3 = wx.features(wx.WeatherSpec(), ["temp_day"], known, np.array([issue + SLOT_NS]))["temp_day"][0]
    assert day3 == pytest.approx(9.0)
    cut = SlotSeries(known.start_ns, np.where(known.end_ns > issue, np.nan, known.values))
    assert wx.features(wx.WeatherSpec(), ["temp_day"], cut, np.array([issue]))["temp_day"][0] == 4.0  # 48 of 96
    early = issue - 12 * 4 * SLOT_NS + 10 * SLOT_NS  # 02:30: 10 slots known → none
    cut3 = SlotSeries(known.start_ns, np.where(known.end_ns > early, np.nan, known.values))
    assert np.isnan(wx.features(wx.WeatherSpec(), ["temp_day"], cut3, np.array([issue]))["temp_day"][0])


def test_readings_become_slot_temperatures_interpolated_but_not_across_long_gaps():
    t0 = parse_time_ns("2023-01-01T00:00:00Z")
    times = np.array([t0, t0 + HOUR, t0 + 2 * HOUR, t0 + 8 * HOUR])
    s = wx.readings_to_slots(times, np.array([0.0, 4.0, 8.0, 0.0]), t0 + SLOT_NS, 40, max_gap_s=3 * 3600)
    assert s.values[0] == pytest.approx(0.5)  # middle of the first slot: 7.5 min → 0.5 °C
    assert s.values[3] == pytest.approx(3.5)
    assert np.isnan(s.values[10])  # between 2 h and 8 h: a 6 h gap
    assert np.isnan(s.values[39])  # after the last reading


def test_window_with_temperature_is_complete_only_with_the_temperature():
    spec = WindowSpec(layout="day", steps=96, horizon=96, residual="pool7d8_q50",
                      features=[*feature_names("day"), *wx.DAY_AHEAD_FEATURES], weather={"timezone": "UTC"})
    series = SlotSeries(parse_time_ns("2023-01-01T00:15:00Z"), np.full(96 * 12, 0.3))
    temp = _daily("2023-01-01T00:00:00Z", [float(k % 5) for k in range(13)])
    issue = parse_time_ns("2023-01-11T00:00:00Z")
    x, complete = build_input(spec, series, issue, temp)
    assert complete
    raw, _ = build_raw(spec, series, issue, temp)
    col = spec.features.index("temp_day")
    assert np.all(raw[:, col] == 10 % 5)
    assert np.allclose(x[0, :, col], (0 - wx.TEMP_CENTER_C) / wx.TEMP_SCALE_C)
    assert not build_input(spec, series, issue, None)[1]
    with pytest.raises(ValueError, match="weather entry"):
        WindowSpec(layout="day", steps=96, horizon=96, features=[*feature_names("day"), "temp_day"])
    with pytest.raises(ValueError, match="timezone"):
        WindowSpec(layout="day", steps=96, horizon=96, features=[*feature_names("day"), "temp_day"],
                   weather={"timezone": "Mars/Olympus"})


def test_local_slots_csv_dst_repeats_duplicated_days_and_temperature(tmp_path):
    rows = ["Timestamp,Energy_kWh,daily_avgTmp"]
    # the hour repeated when DST ends (Zurich, 2021-10-31 02:00-02:45 twice), then a normal hour
    for rep in (0.1, 0.2):
        rows += [f"2021-10-31 02:{m:02d}:00,{rep},5.0" for m in (0, 15, 30, 45)]
    rows += [f"2021-10-31 03:{m:02d}:00,0.3,5.0" for m in (0, 15, 30, 45)]
    rows += ["2021-10-31 03:00:00,9.9,5.0"]  # a duplicate of an unambiguous time: the first is kept
    rows += ["2021-03-28 02:15:00,7.7,1.0"]  # does not exist (DST skips 02:00-03:00)
    f = tmp_path / "local.csv"
    f.write_text("\n".join(rows) + "\n")
    r = read_local_slots(f, "Europe/Zurich")
    assert r.duplicates == 1 and r.nonexistent == 1
    e = r.energy
    # 02:00 CEST = 00:00 UTC; the second 02:00 (CET) = 01:00 UTC; 03:00 CET = 02:00 UTC; slot end = start + 15 min
    first = parse_time_ns("2021-10-31T00:15:00Z")
    assert e.start_ns == first
    assert e.values[:4].tolist() == [0.1] * 4 and e.values[4:8].tolist() == [0.2] * 4
    assert e.values[8:12].tolist() == [0.3] * 4
    assert np.all(r.temperature.values == 5.0)


def test_manifest_names_say_which_bundles_need_the_temperature(seed_bundles):
    """cnn-96-weather must have temperature features and cnn-96 must not: the edge serves the one without when the
    forecast is missing, so a plain name must never need it."""
    import json

    from shared import manifest as mf

    doc = json.loads((seed_bundles / "cnn-96" / "manifest.json").read_text())
    assert doc["window"]["weather"] is None
    weather = json.loads(json.dumps(doc))
    weather["window"]["features"] += list(wx.DAY_AHEAD_FEATURES)
    weather["window"]["weather"] = {"timezone": "Europe/Zurich", "heating_base_c": 18.0, "cooling_base_c": 22.0}
    weather["input"]["shape"][-1] += len(wx.DAY_AHEAD_FEATURES)
    with pytest.raises(mf.ManifestError, match="named cnn-96-weather"):
        mf.validate(weather)
    mf.validate(weather | {"name": "cnn-96-weather"})
    with pytest.raises(mf.ManifestError, match="only such a bundle"):
        mf.validate(doc | {"name": "cnn-96-weather"})
    with pytest.raises(mf.ManifestError, match="name must be cnn-96"):
        mf.validate(doc | {"name": "cnn-96-rain"})
    bad = json.loads(json.dumps(weather)) | {"name": "cnn-96-weather"}
    bad["window"]["weather"]["heating_base_c"] = "warm"
    with pytest.raises(mf.ManifestError, match="heating_base_c"):
        mf.validate(bad)
