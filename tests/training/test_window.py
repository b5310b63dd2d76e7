"""Window/feature parity: training samples equal what the edge builds from a series read back from InfluxDB."""

import numpy as np
import pytest

from shared.baselines import BASELINES, fallback
from shared.schema import SLOT_NS
from shared.series import counter_to_slots, parse_time_ns, read_csv
from shared.window import WindowSpec, build_input, target
from training import dataset

SERIES = counter_to_slots(read_csv("data/seed_house/raw_data.csv"))
T = parse_time_ns("2023-07-05T12:00:00Z")


def test_no_future_leaks_into_inputs():
    for spec in (WindowSpec("next", 32, 1, 0.37, 0.16), WindowSpec("day", 96, 96, 0.37, 0.16)):
        x_full, _ = build_input(spec, SERIES, T)
        x_cut, _ = build_input(spec, SERIES.until(T), T)
        assert np.array_equal(x_full, x_cut)


def test_training_samples_equal_edge_inputs_from_influx(influxd_session, influx_db_name):
    """The edge reads counters from InfluxDB and rebuilds the window: same numbers as the training sample."""
    from datetime import UTC, datetime

    from shared.points import Point
    from shared.storage import StorageConfig, open_storage
    from training.data import InfluxSource, read_influx, to_slots

    spec = WindowSpec("next", 32, 1, 0.37, 0.16)
    x_train, y_train, kept = dataset.build(spec, SERIES, np.array([T]))
    rows = read_csv("data/seed_house/raw_data.csv")
    sel = (rows.times > T - 9 * 86400 * 10**9) & (rows.times <= T)
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    st.write([Point("EnergyMeter", {"device_id": "m"}, {"EnergyIn": float(v)}, int(t))
              for t, v in zip(rows.times[sel], rows.values[sel], strict=True)])
    got = read_influx(st, InfluxSource("EnergyMeter", "EnergyIn", datetime(2023, 6, 1, tzinfo=UTC),
                                       datetime(2023, 7, 6, tzinfo=UTC), {"device_id": "m"}))
    x_edge, complete = build_input(spec, to_slots(got), T)
    assert complete and kept.tolist() == [T]
    np.testing.assert_array_equal(x_edge[0], x_train[0])
    assert y_train[0, 0] == SERIES.values[SERIES.index_of(T + SLOT_NS)]


def test_incomplete_window_is_reported():
    spec = WindowSpec("next", 32, 1, 0.37, 0.16)
    gap_end = parse_time_ns("2023-08-24T12:00:00Z")  # inside the longest gap
    _, complete = build_input(spec, SERIES, gap_end)
    assert not complete


def test_baselines_use_only_the_past():
    y = target(SERIES, T, 96)
    for name, fn in BASELINES.items():
        a, b = fn(SERIES, T, 96), fn(SERIES.until(T), T, 96)
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert BASELINES["persistence"](SERIES, T, 3).tolist() == [SERIES.values[SERIES.index_of(T)]] * 3
    assert BASELINES["same_slot_yesterday"](SERIES, T, 96)[0] == SERIES.values[SERIES.index_of(T) + 1 - 96]
    name, values = fallback(SERIES, T, 96)
    assert name == "median_7_days" and np.isfinite(values).all() and len(y) == 96


def test_pool_features_use_only_the_past_and_match_their_definition():
    spec = WindowSpec("day", 96, 96, 0.37, 0.16)
    assert "pool7d8_q50" in spec.features and spec.history_slots == 28 * 96 + 8 + 1
    from shared.window import build_raw

    raw, _ = build_raw(spec, SERIES, T)
    last = SERIES.index_of(T)
    col = spec.features.index("pool14d4_q25")
    for j in (0, 50, 95):  # step j forecasts the slot last + 1 + j
        target_idx = last + 1 + j
        pool = [SERIES.values[target_idx - 96 * k + h] for k in range(1, 15) for h in range(-4, 5)
                if target_idx - 96 * k + h <= last]
        assert raw[j, col] == np.nanquantile(pool, 0.25)
    x_full, _ = build_input(spec, SERIES, T)
    x_cut, _ = build_input(spec, SERIES.until(T), T)
    assert np.array_equal(x_full, x_cut)


def test_features_are_computed_by_name_for_older_bundles():
    old = ["lag_1d", "lag_2d", "lag_3d", "lag_4d", "lag_5d", "lag_6d", "lag_7d", "median7", "tod_sin", "tod_cos",
           "dow_sin", "dow_cos", "level_1d", "last", "step"]  # the first release's day-ahead list
    spec = WindowSpec.from_dict({"layout": "day", "steps": 96, "horizon": 96, "mean": 0.37, "std": 0.16,
                                 "features": old, "residual": "median7"})
    x, complete = build_input(spec, SERIES, T)
    assert x.shape == (1, 96, len(old)) and complete
    new = WindowSpec("day", 96, 96, 0.37, 0.16)
    x_new, _ = build_input(new, SERIES, T)
    for name in old:
        np.testing.assert_array_equal(x[0, :, old.index(name)], x_new[0, :, new.features.index(name)])
    with pytest.raises(ValueError, match="unknown 'day' window features: lag_9x"):
        WindowSpec("day", 96, 96, features=[*old, "lag_9x"])
    with pytest.raises(ValueError, match="residual feature"):
        WindowSpec("day", 96, 96, features=old, residual="pool7d8_q50")
