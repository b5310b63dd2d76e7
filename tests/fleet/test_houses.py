"""The synthetic houses (tools/houses.py) are deterministic and differ from each other the documented way:
time-shifted, scaled, with gaps of their own, as a rising counter ending at the requested time."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from shared.schema import SLOT_NS, SLOTS_PER_DAY
from tools.houses import houses, readings, real_slots, slots

END = datetime(2026, 3, 10, 12, 7, tzinfo=UTC)


def test_the_same_seed_gives_the_same_houses_and_a_house_does_not_depend_on_how_many():
    assert houses(3, seed=7) == houses(3, seed=7)
    assert houses(5, seed=7)[:3] == houses(3, seed=7)
    assert readings(houses(1, seed=7)[0], END, 10) == readings(houses(3, seed=7)[0], END, 10)
    assert houses(3, seed=7) != houses(3, seed=8)


def test_houses_are_shifted_scaled_and_have_their_own_gaps():
    hs = houses(3, seed=7)
    assert len({h.offset_days for h in hs}) == 3 and all(0.6 <= h.scale <= 1.8 for h in hs)
    real = real_slots().values
    for h in hs:
        got = slots(h, 30)
        start = h.offset_days * SLOTS_PER_DAY % len(real)
        base = real[(start + np.arange(len(got))) % len(real)]
        both = np.isfinite(got) & np.isfinite(base) & (base > 0)
        ratio = np.median(got[both] / base[both])
        assert abs(ratio / h.scale - 1) < 0.03, (h, ratio)  # scaled (noise has median 1)
        own_gaps = np.isnan(got) & np.isfinite(base)
        assert own_gaps.sum() >= 8, h  # at least one gap of its own (2 h or more)


def test_readings_are_a_rising_counter_on_slot_ends_up_to_end():
    rows = readings(houses(1, seed=7)[0], END, 10)
    times = np.array([t for t, _ in rows])
    values = np.array([v for _, v in rows])
    last = int(END.timestamp() * 1e9) // SLOT_NS * SLOT_NS
    assert times[0] == last - (10 * SLOTS_PER_DAY - 1) * SLOT_NS  # the first reading anchors the counter
    assert times[-1] <= last  # the last slot ends at END rounded down (a gap may take the last readings)
    assert np.all(np.diff(times) > 0) and np.all(times % SLOT_NS == 0)
    assert np.all(np.diff(values) >= 0)
    assert len(rows) < 10 * SLOTS_PER_DAY  # the gaps are missing readings
