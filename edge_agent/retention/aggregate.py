"""Per-device 15-minute aggregates from the raw readings: what lasts of a device once its raw readings expire.

For each device series (measurement + tags) and slot (T − 15 min, T]:
- a counter field: its value at T, by the rule every part of the project uses (shared.series.counter_at: the
  reading at T, or a linear interpolation between the last reading before and the first after, at most
  `max_interp_s` apart), so slots computed later from the aggregates equal those computed from the raw readings;
- any other numeric field: mean, min, max and count of the readings in the slot.

Computed by the agent, not by InfluxDB continuous queries (which run only for the interval just ended and skip
what was missed while InfluxDB or the agent was down): the agent recomputes any range — after an outage, after late
readings, for a history it never saw. InfluxDB does the reading: one GROUP BY time(15m) query per measurement for
the gauges (the 1 ns offset makes its buckets (T − 15 min, T]), and two selector statements per boundary and
counter field (`last` before, `first` after, GROUP BY every tag) that return each reading's own time.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict

import numpy as np

from shared.points import Point
from shared.schema import DEVICE_SLOTS, DEVICE_SLOTS_MEASUREMENT_TAG, GAUGE_STATS, SLOT_NS
from shared.series import Readings, counter_at
from shared.storage import Storage
from shared.storage.influx1 import quote_ident

STATEMENTS_PER_REQUEST = 200
SeriesKey = tuple[tuple[str, str], ...]


def numeric_fields(storage: Storage, source: str) -> list[str]:
    rows = storage.query(f"SHOW FIELD KEYS FROM {source}")
    return sorted({r["fieldKey"] for r in rows if r.get("fieldType") in ("float", "integer")})


def split_fields(measurement: str, fields: list[str], counter_globs: list[str],
                 known_counters: set[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(counters, gauges): a field is a counter when the flow or the forecast reads it as one, or its name (or
    `measurement.field`) matches a glob of `[retention] counters`."""
    counters = [f for f in fields if (measurement, f) in known_counters
                or any(fnmatch.fnmatchcase(f, g) or fnmatch.fnmatchcase(f"{measurement}.{f}", g) for g in counter_globs)]
    return counters, [f for f in fields if f not in counters]


def _key(row: dict, skip: set[str]) -> SeriesKey:
    return tuple(sorted((k, v) for k, v in row.items() if k not in skip and isinstance(v, str) and v != ""))


def gauge_rows(storage: Storage, source: str, fields: list[str], lo_ns: int, hi_ns: int
               ) -> dict[tuple[SeriesKey, int], dict[str, float | int]]:
    """mean/min/max/count per series and slot end, for slots ending in (lo_ns, hi_ns]."""
    if not fields:
        return {}
    sel = ", ".join(f"{fn}({quote_ident(f)}) AS {quote_ident(f'{f}_{fn}')}" for f in fields for fn in GAUGE_STATS)
    q = (f"SELECT {sel} FROM {source} WHERE time > {lo_ns} AND time <= {hi_ns} "
         "GROUP BY time(15m, 1ns), * fill(none)")
    names = {f"{f}_{fn}" for f in fields for fn in GAUGE_STATS}
    out: dict[tuple[SeriesKey, int], dict[str, float | int]] = {}
    for row in storage.query(q):
        end = int(row["time"]) - 1 + SLOT_NS  # the bucket (start, start + 15 min] is labelled start + 1 ns
        values = {k: (int(v) if k.endswith("_count") else float(v)) for k, v in row.items()
                  if k in names and isinstance(v, int | float) and not isinstance(v, bool)}
        if values:
            out[(_key(row, names | {"time", "_measurement"}), end)] = values
    return out


def counter_values(storage: Storage, source: str, field: str, ends: list[int], max_interp_s: float
                   ) -> dict[tuple[SeriesKey, int], float]:
    """The counter's value at each slot end per series (missing where unknown: no reading after it yet, a gap
    longer than max_interp_s)."""
    window = int(max_interp_s * 1e9)
    f = quote_ident(field)
    statements = []
    for b in ends:
        statements.append(f"SELECT last({f}) FROM {source} WHERE time <= {b} AND time > {b - window} GROUP BY *")
        statements.append(f"SELECT first({f}) FROM {source} WHERE time > {b} AND time <= {b + window} GROUP BY *")
    readings: dict[SeriesKey, set[tuple[int, float]]] = defaultdict(set)
    for k in range(0, len(statements), STATEMENTS_PER_REQUEST):
        for row in storage.query("; ".join(statements[k:k + STATEMENTS_PER_REQUEST])):
            value = row.get("last", row.get("first"))
            if isinstance(value, int | float) and not isinstance(value, bool):
                readings[_key(row, {"time", "last", "first", "_measurement"})].add((int(row["time"]), float(value)))
    grid = np.array(ends, dtype=np.int64)
    out: dict[tuple[SeriesKey, int], float] = {}
    for key, rows in readings.items():
        values = counter_at(Readings.from_rows(sorted(rows)), grid, max_interp_s)
        for b, v in zip(ends, values.tolist(), strict=True):
            if np.isfinite(v):
                out[(key, b)] = v
    return out


def slot_points(measurement: str, gauges: dict, counters: dict[str, dict]) -> list[Point]:
    """device_slots points: one per series and slot end, gauges and counters merged."""
    merged: dict[tuple[SeriesKey, int], dict[str, float | int]] = defaultdict(dict)
    for k, values in gauges.items():
        merged[k].update(values)
    for field, values in counters.items():
        for k, v in values.items():
            merged[k][field] = v
    points = []
    for (key, end), fields in sorted(merged.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        tags = dict(key) | {DEVICE_SLOTS_MEASUREMENT_TAG: measurement}
        points.append(Point(DEVICE_SLOTS, tags, fields, end))
    return points
