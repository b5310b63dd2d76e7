"""A counter's values at slot boundaries, read the cheap way and cached.

A counter's value at a boundary B depends only on the last reading at or before B and the first after it (the
same rule as shared.series.counter_at: exact, or interpolated across at most `max_interp_s`). So instead of
re-reading every raw reading of a time range (issue 18: 440-700k points per recompute at 200 msg/s), the flow
and the forecast ask the database for those two readings per boundary (`Storage.readings_near`), and keep the
values that are settled: a value with a reading on both sides cannot change unless a reading arrives out of
order, which `invalidate_from` handles. Long ranges (a restart, a year replayed, a catch-up after an outage) are
read raw in chunks of at most about `TARGET_ROWS` readings, planned from one query of the readings per hour, each
chunk's boundaries computed before the next is read (a meter every second: chunks of about 14 hours; every 15
minutes: 40 days at once). Before, the whole range was read in 40-day chunks and kept: 8 days of a meter sending every second are
691,200 readings, ≈350 MB in the agent at a restart — beyond the Pi unit's MemoryMax of 256 MB.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np

from shared.schema import SLOT_NS
from shared.series import Readings, counter_at
from shared.storage import Storage
from shared.storage.influx1 import quote_ident, quote_str

log = logging.getLogger(__name__)

NEAR_LIMIT = 64  # up to this many unknown boundaries: two selector queries each; beyond: raw readings
TARGET_ROWS = 50_000  # raw readings per chunk (≈25 MB while parsed)
MAX_SPAN_NS = 40 * 96 * SLOT_NS  # a chunk's boundaries span at most this
FALLBACK_SPAN_NS = 24 * SLOT_NS  # without readings per hour: 6 h per chunk (21,600 readings every second)
HOUR_NS = 3600 * 10**9


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
        consecutive chunks of raw readings, each with the interpolation window on both sides and about
        TARGET_ROWS readings at most, planned from the readings per hour (an empty stretch — before a device
        existed — must not widen the next chunk over a dense one)."""
        if not boundaries:
            return
        if len(boundaries) <= NEAR_LIMIT:
            yield boundaries, Readings.from_rows(self.storage.readings_near(
                self.measurement, self.field, self.tags, boundaries, self.window_ns))
            return
        todo, w = sorted(boundaries), self.window_ns
        rows_in = self._rows_estimate(todo[0] - w, todo[-1] + w + 1)
        i = 0
        while i < len(todo):
            j = i + 1
            while (j < len(todo) and todo[j] - todo[i] <= MAX_SPAN_NS
                   and rows_in(todo[i] - w, todo[j] + w) <= TARGET_ROWS):
                j += 1
            group = todo[i:j]
            rows = self.storage.query_series(
                self.measurement, self.field, datetime.fromtimestamp((group[0] - w) / 1e9, UTC),
                datetime.fromtimestamp((group[-1] + w + 1) / 1e9, UTC), self.tags)
            yield group, Readings.from_rows(rows)
            i = j

    def _rows_estimate(self, lo: int, hi: int) -> Callable[[int, int], float]:
        """A function (a, b) → at least the number of readings in [a, b], from one query of the readings per
        hour over [lo, hi); where that cannot be asked (InfluxDB 2.x: untested), one chunk per FALLBACK_SPAN_NS."""
        cond = "".join(f" AND {quote_ident(k)} = {quote_str(v)}" for k, v in (self.tags or {}).items())
        try:
            rows = self.storage.query(
                f"SELECT count({quote_ident(self.field)}) AS n FROM {self.storage.source(self.measurement)} "
                f"WHERE time >= {lo} AND time < {hi}{cond} GROUP BY time(1h) fill(none)")
            hours = sorted((int(r["time"]), int(r["n"])) for r in rows if r.get("n"))
        except Exception as exc:
            log.debug("boundaries: readings per hour not available (%s): chunks of %d s", exc, FALLBACK_SPAN_NS // 10**9)
            return lambda a, b: TARGET_ROWS + 1 if b - a > FALLBACK_SPAN_NS + 2 * self.window_ns else 0
        starts = [h for h, _ in hours]
        cum = np.concatenate([[0], np.cumsum([n for _, n in hours])])

        def rows_in(a: int, b: int) -> float:  # every hour that overlaps [a, b], whole
            return float(cum[bisect.bisect_right(starts, b)] - cum[bisect.bisect_right(starts, a - HOUR_NS)])

        return rows_in

    def invalidate_from(self, t_ns: int) -> None:
        """A reading at t_ns arrived out of order: boundaries it can affect are read again."""
        cut = t_ns - self.window_ns
        for b in [b for b in self._cache if b >= cut]:
            del self._cache[b]

    def forget_before(self, t_ns: int) -> None:
        """Bound the memory: drop boundaries older than t_ns."""
        for b in [b for b in self._cache if b < t_ns]:
            del self._cache[b]
