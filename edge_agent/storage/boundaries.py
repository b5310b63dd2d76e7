"""A counter's values at slot boundaries, read the cheap way and cached.

A counter's value at a boundary B depends only on the last reading at or before B and the first after it (the
same rule as shared.series.counter_at: exact, or interpolated across at most `max_interp_s`). So instead of
re-reading every raw reading of a time range (issue 18: 440-700k points per recompute at 200 msg/s), the flow
and the forecast ask the database for those two readings per boundary (`Storage.readings_near`), and keep the
values that are settled: a value with a reading on both sides cannot change unless a reading arrives out of
order, which `invalidate_from` handles. Long ranges (a restart, a year replayed, a catch-up after an outage) are
read raw in chunks of about `TARGET_ROWS` readings, each chunk's boundaries computed before the next is read: a
chunk's time span adapts to the device's rate (a meter every second: hours; every 15 minutes: the whole range at
once). Before, the whole range was read in 40-day chunks and kept: 8 days of a meter sending every second are
691,200 readings, ≈350 MB in the agent at a restart — beyond the Pi unit's MemoryMax of 256 MB.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

from shared.schema import SLOT_NS
from shared.series import Readings, counter_at
from shared.storage import Storage

NEAR_LIMIT = 64  # up to this many unknown boundaries: two selector queries each; beyond: raw readings
TARGET_ROWS = 50_000  # raw readings per chunk (≈25 MB while parsed)
FIRST_SPAN_NS = 24 * SLOT_NS  # the first chunk's boundaries (6 h: 21,600 readings of a meter every second)
MAX_SPAN_NS = 40 * 96 * SLOT_NS


class CounterBoundaries:
    def __init__(self, storage: Storage, measurement: str, field: str, tags: dict[str, str] | None,
                 max_interp_s: float = 1800.0):
        self.storage = storage
        self.measurement, self.field, self.tags = measurement, field, tags or None
        self.max_interp_s = max_interp_s
        self.window_ns = int(max_interp_s * 1e9)
        self._cache: dict[int, tuple[float, float]] = {}  # boundary ns → (value, interpolation span s)

    def values(self, boundaries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counter values and interpolation spans (s; 0 = exact) at the boundaries; NaN where unknown."""
        bounds = [int(b) for b in boundaries]
        found = {b: self._cache[b] for b in bounds if b in self._cache}
        missing = [b for b in bounds if b not in found]
        for group, readings in self._read(missing):
            vals, spans = counter_at(readings, np.array(group, dtype=np.int64), self.max_interp_s, spans=True)
            for b, v, sp in zip(group, vals.tolist(), spans.tolist(), strict=True):
                found[b] = (v, sp)
                if np.isfinite(v):  # settled: exact, or between readings on both sides; unknown ones are re-read
                    self._cache[b] = (v, sp)
        return (np.array([found[b][0] for b in bounds], dtype=float),
                np.array([found[b][1] for b in bounds], dtype=float))

    def _read(self, boundaries: list[int]) -> Iterator[tuple[list[int], Readings]]:
        """(boundaries, the readings that decide them) in groups: one for a few boundaries (selectors), else
        consecutive chunks of raw readings, each with the interpolation window on both sides."""
        if not boundaries:
            return
        if len(boundaries) <= NEAR_LIMIT:
            yield boundaries, Readings.from_rows(self.storage.readings_near(
                self.measurement, self.field, self.tags, boundaries, self.window_ns))
            return
        todo, span, i = sorted(boundaries), FIRST_SPAN_NS, 0
        while i < len(todo):
            j = max(i + 1, bisect.bisect_left(todo, todo[i] + span, i))
            group = todo[i:j]
            rows = self.storage.query_series(
                self.measurement, self.field, datetime.fromtimestamp((group[0] - self.window_ns) / 1e9, UTC),
                datetime.fromtimestamp((group[-1] + self.window_ns + 1) / 1e9, UTC), self.tags)
            yield group, Readings.from_rows(rows)
            # the next chunk's span from this one's density: about TARGET_ROWS readings
            span = int(min(MAX_SPAN_NS, max(SLOT_NS, span * TARGET_ROWS / max(len(rows), 1))))
            i = j

    def invalidate_from(self, t_ns: int) -> None:
        """A reading at t_ns arrived out of order: boundaries it can affect are read again."""
        cut = t_ns - self.window_ns
        for b in [b for b in self._cache if b >= cut]:
            del self._cache[b]

    def forget_before(self, t_ns: int) -> None:
        """Bound the memory: drop boundaries older than t_ns."""
        for b in [b for b in self._cache if b < t_ns]:
            del self._cache[b]
