"""Raw meter readings → house consumption in kWh per 15-minute slot on a regular UTC grid (numpy only).

A slot is labelled by its END time T and covers (T − 15 min, T] (as Flux `aggregateWindow` stamps windows).

Rules (documented in docs/training.md):
- Rows are sorted by time; rows with the same timestamp are duplicates: the first is kept.
- Counter input (kWh): the counter at each grid time is the reading at that time, or a linear interpolation
  between the readings just before and after when they are at most `max_interp_s` apart; otherwise unknown.
  slot(T) = counter(T) − counter(T − 15 min). A slot is masked (NaN, never invented) when:
  either end is unknown (a gap), the difference is negative (a counter reset / meter replacement: the new
  counter continues from the next slot on), both readings are exact integers (a quantised meter reading, seen
  for days after the 2023-02-10 replacement), or it exceeds `max_slot_kwh` (outlier rule: more than a 63 A
  three-phase connection can deliver in 15 minutes, 43.5 kW × 0.25 h ≈ 10.9 kWh).
- Power input (W): slot energy = time-weighted mean power over the slot (each sample held until the next,
  at most `max_interp_s`) × 0.25 h; masked when less than `min_coverage` of the slot is covered.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.schema import SLOT_NS, SLOT_SECONDS

MAX_SLOT_KWH = 43.5 * 0.25


def parse_time_ns(text: str) -> int:
    """RFC 3339 / ISO 8601 (naive = UTC) → ns since the epoch."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def merge_slot_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(first, last) slot-end ranges, overlapping or adjacent ones merged: what a recomputation has to cover."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + SLOT_NS:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def iso(ns: int) -> str:
    """ns → `YYYY-MM-DDTHH:MM:SSZ` (UTC)."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Readings:
    """Raw (time_ns, value) rows, sorted, duplicates removed."""

    times: np.ndarray  # int64 ns
    values: np.ndarray  # float64
    duplicates: int = 0

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, float]]) -> Readings:
        arr = list(rows)
        if not arr:
            return cls(np.zeros(0, np.int64), np.zeros(0))
        times = np.array([r[0] for r in arr], dtype=np.int64)
        values = np.array([r[1] for r in arr], dtype=np.float64)
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        keep = np.ones(len(times), bool)
        keep[1:] = times[1:] != times[:-1]
        finite = np.isfinite(values)
        return cls(times[keep & finite], values[keep & finite], int((~keep).sum()))

    def merge(self, other: Readings) -> Readings:
        return Readings.from_rows(list(zip(np.concatenate([self.times, other.times]).tolist(),
                                           np.concatenate([self.values, other.values]).tolist(), strict=True)))


def read_csv(path: str | Path) -> Readings:
    """InfluxDB annotated CSV (as exported by Flux), the same without `#` rows, or a plain `time,value` CSV."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return parse_csv(text, str(path))


def parse_csv(text: str, name: str = "<csv>") -> Readings:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    reader = csv.reader(io.StringIO("\n".join(lines)))
    rows: list[tuple[int, float]] = []
    header: list[str] | None = None
    t_col = v_col = -1
    for row in reader:
        if header is None or (row and row == header):  # Flux repeats the header per table
            if header is None:
                header = [c.strip() for c in row]
                for t_name, v_name in (("_time", "_value"), ("time", "value")):
                    if t_name in header and v_name in header:
                        t_col, v_col = header.index(t_name), header.index(v_name)
                        break
                else:
                    raise ValueError(f"{name}: no _time/_value or time/value columns in header {header}")
            continue
        if len(row) <= max(t_col, v_col) or not row[t_col]:
            continue
        try:
            rows.append((parse_time_ns(row[t_col]), float(row[v_col])))
        except ValueError as exc:
            raise ValueError(f"{name}: bad row {row!r}: {exc}") from None
    return Readings.from_rows(rows)


@dataclass
class SlotSeries:
    """kWh per slot; `end_ns[i]` is slot i's end time; NaN = masked (unknown)."""

    start_ns: int  # end time of the first slot
    values: np.ndarray

    @property
    def end_ns(self) -> np.ndarray:
        return self.start_ns + SLOT_NS * np.arange(len(self.values), dtype=np.int64)

    @property
    def last_ns(self) -> int:
        return self.start_ns + SLOT_NS * (len(self.values) - 1)

    def index_of(self, t_ns: int) -> int:
        return int((t_ns - self.start_ns) // SLOT_NS)

    def until(self, t_ns: int) -> SlotSeries:
        """Slots ending at or before t_ns."""
        n = max(0, min(len(self.values), self.index_of(t_ns) + 1))
        return SlotSeries(self.start_ns, self.values[:n])

    def window(self, end_ns: int, steps: int) -> np.ndarray:
        """`steps` slot values ending at end_ns (NaN where unknown or outside the series)."""
        out = np.full(steps, np.nan)
        last = self.index_of(end_ns)
        first = last - steps + 1
        lo, hi = max(first, 0), min(last, len(self.values) - 1)
        if hi >= lo:
            out[lo - first:hi - first + 1] = self.values[lo:hi + 1]
        return out


def grid_bounds(times: np.ndarray) -> tuple[int, int]:
    """First and last slot end covering the readings (aligned to 15 minutes)."""
    first = int(-(-times[0] // SLOT_NS) * SLOT_NS)
    last = int(times[-1] // SLOT_NS * SLOT_NS)
    return first, last


def counter_at(readings: Readings, grid: np.ndarray, max_interp_s: float,
               spans: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Counter values at grid times (exact, or interpolated across at most max_interp_s), NaN otherwise.

    With `spans`, also the seconds between the two readings each value was interpolated from (0 = exact,
    NaN = unknown): the flow flags slots whose value bridged a missing reading."""
    t, v = readings.times, readings.values
    out = np.full(len(grid), np.nan)
    span_s = np.full(len(grid), np.nan)
    if len(t) == 0:
        return (out, span_s) if spans else out
    idx = np.searchsorted(t, grid, side="left")
    exact = (idx < len(t)) & (t[np.minimum(idx, len(t) - 1)] == grid)
    out[exact] = v[idx[exact]]
    span_s[exact] = 0.0
    inner = ~exact & (idx > 0) & (idx < len(t))
    lo, hi = idx[inner] - 1, idx[inner]
    span = (t[hi] - t[lo]) / 1e9
    ok = (span <= max_interp_s) & (v[hi] >= v[lo])  # never interpolate across a reset
    frac = (grid[inner] - t[lo]) / np.maximum(t[hi] - t[lo], 1)
    vals = v[lo] + frac * (v[hi] - v[lo])
    sub = np.where(inner)[0]
    out[sub[ok]] = vals[ok]
    span_s[sub[ok]] = span[ok]
    return (out, span_s) if spans else out


def slots_from_counter(c: np.ndarray, max_slot_kwh: float = MAX_SLOT_KWH, mask_quantised: bool = True) -> np.ndarray:
    """kWh per slot from counter values at consecutive slot boundaries (len(c) − 1 slots), with the masking
    rules of this module: gaps, resets (negative), quantised readings, outliers → NaN."""
    diff = c[1:] - c[:-1]
    quantised = (c[1:] == np.round(c[1:])) & (c[:-1] == np.round(c[:-1])) & mask_quantised
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(diff) | (diff < 0) | quantised | (diff > max_slot_kwh)
    return np.where(bad, np.nan, diff)


def counter_to_slots(readings: Readings, start_ns: int | None = None, end_ns: int | None = None,
                     max_interp_s: float = 1800, max_slot_kwh: float = MAX_SLOT_KWH,
                     mask_quantised: bool = True) -> SlotSeries:
    """Counter readings → slots; `mask_quantised=False` keeps slots between integer readings (for counters that
    legitimately stand still at a whole number, such as a PV production counter at night)."""
    if len(readings.times) == 0:
        return SlotSeries(start_ns or 0, np.zeros(0))
    first, last = grid_bounds(readings.times)
    start_ns = first + SLOT_NS if start_ns is None else start_ns
    end_ns = last if end_ns is None else end_ns
    n = max(0, (end_ns - start_ns) // SLOT_NS + 1)
    ends = start_ns + SLOT_NS * np.arange(-1, n, dtype=np.int64)  # one extra: the start of the first slot
    c = counter_at(readings, ends, max_interp_s)
    return SlotSeries(start_ns, slots_from_counter(c, max_slot_kwh, mask_quantised))


def power_to_slots(readings: Readings, start_ns: int | None = None, end_ns: int | None = None,
                   max_interp_s: float = 300, min_coverage: float = 0.8) -> SlotSeries:
    """Power samples (W) → kWh per slot by a time-weighted mean (sample-and-hold, each for at most max_interp_s)."""
    t, w = readings.times, readings.values
    if len(t) == 0:
        return SlotSeries(start_ns or 0, np.zeros(0))
    first, last = grid_bounds(t)
    start_ns = first if start_ns is None else start_ns
    end_ns = last if end_ns is None else end_ns
    n = max(0, (end_ns - start_ns) // SLOT_NS + 1)
    hold_end = np.minimum(np.append(t[1:], t[-1] + int(max_interp_s * 1e9)), t + int(max_interp_s * 1e9))
    energy_ws = np.zeros(n)
    covered = np.zeros(n)
    for i in range(len(t)):
        a, b = t[i], hold_end[i]
        k0 = max(0, int((a - (start_ns - SLOT_NS)) // SLOT_NS))
        while k0 < n:
            s_lo = start_ns - SLOT_NS + k0 * SLOT_NS
            s_hi = s_lo + SLOT_NS
            if s_lo >= b:
                break
            overlap = (min(b, s_hi) - max(a, s_lo)) / 1e9
            if overlap > 0:
                energy_ws[k0] += w[i] * overlap
                covered[k0] += overlap
            k0 += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_w = energy_ws / covered
    values = np.where(covered >= min_coverage * SLOT_SECONDS, mean_w * SLOT_SECONDS / 3.6e6, np.nan)
    values = np.where(values < 0, np.nan, values)
    return SlotSeries(start_ns, values)
