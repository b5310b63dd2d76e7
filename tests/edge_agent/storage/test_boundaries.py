"""A counter's values at slot boundaries over a long range (edge_agent/storage/boundaries.py): the same values as
from every raw reading, read in chunks that hold a bounded number of readings whatever the device's rate. Before,
a restart of a house whose meter reports every second read 8 days of readings at once (≈350 MB in the agent,
beyond the Pi unit's MemoryMax of 256 MB); here 2 days at 1 reading/s stand in for it."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from edge_agent.storage import boundaries
from edge_agent.storage.boundaries import CounterBoundaries
from shared.schema import SLOT_NS
from shared.series import Readings, counter_at
from shared.storage import open_storage
from shared.storage.base import StorageConfig

T0 = 1_700_006_400 * 10**9  # a slot boundary


class RowCounting:
    """The real storage, counting the readings each raw query returned."""

    def __init__(self, storage):
        self.storage, self.rows = storage, []

    def query_series(self, *args, **kwargs):
        rows = self.storage.query_series(*args, **kwargs)
        self.rows.append(len(rows))
        return rows

    def readings_near(self, *args, **kwargs):
        return self.storage.readings_near(*args, **kwargs)

    def query(self, text):
        return self.storage.query(text)

    def source(self, measurement):
        return self.storage.source(measurement)


@pytest.mark.parametrize("every_s, days, empty_days", [(1, 2, 0), (900, 60, 0), (1, 2, 6)])
def test_long_ranges_read_in_bounded_chunks_give_the_same_values(influxd_session, influx_db_name, every_s, days,
                                                                 empty_days):
    """empty_days: the boundaries start that long before the first reading (a forecast's 8 days at a new
    install): an empty stretch must not widen a chunk over the dense days after it (bench-retention's 375 MB)."""
    storage = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    rng = np.random.default_rng(3)
    n = days * 86_400 // every_s
    first = T0 + empty_days * 86_400 * 10**9
    times = first + np.arange(n, dtype=np.int64) * every_s * 10**9 + rng.integers(0, 10**9, n)  # unaligned
    values = np.round(1000 + np.cumsum(rng.uniform(0, 0.0005 * every_s, n)), 4)
    for k in range(0, n, 50_000):
        storage.write_lines(b"".join(f"meter,device=m EnergyIn={v!r} {t}\n".encode()
                                     for t, v in zip(times[k:k + 50_000].tolist(), values[k:k + 50_000].tolist(),
                                                     strict=True)))
    ends = T0 + SLOT_NS * np.arange(1, (empty_days + days) * 96)
    counting = RowCounting(storage)
    got, spans = CounterBoundaries(counting, "meter", "EnergyIn", {"device": "m"}, 1800).values(ends)
    want, want_spans = counter_at(Readings.from_rows(list(zip(times.tolist(), values.tolist(), strict=True))),
                                  ends, 1800, spans=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(spans, want_spans)
    assert sum(counting.rows) >= n  # every reading was read (the margins twice)
    assert max(counting.rows) <= boundaries.TARGET_ROWS * 1.2, counting.rows
    if every_s == 900:  # a slow meter: the whole range in one or two reads, not one per 6 hours
        assert len(counting.rows) <= 3, counting.rows
    storage.close()


def test_a_few_boundaries_are_read_by_selectors(influxd_session, influx_db_name):
    storage = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    storage.write_lines(f"meter EnergyIn=1.0 {T0 - 60 * 10**9}\nmeter EnergyIn=2.0 {T0 + 60 * 10**9}\n".encode())
    counting = RowCounting(storage)
    got, spans = CounterBoundaries(counting, "meter", "EnergyIn", None, 1800).values(np.array([T0]))
    assert got.tolist() == [1.5] and spans.tolist() == [120.0] and counting.rows == []
    assert datetime.fromtimestamp(T0 / 1e9, UTC).minute % 15 == 0
    storage.close()
