"""Training data: CSV files (annotated Flux export, the same without annotations, plain time,value) or an
InfluxDB 1.x/2.x query → slots (shared.series)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared.series import Readings, SlotSeries, counter_to_slots, power_to_slots, read_csv

INPUT_KINDS = ("counter", "power")  # a cumulative counter in kWh, or power in W


@dataclass
class InfluxSource:
    """A series in InfluxDB: measurement, field, tag filters and a time range."""

    measurement: str
    field: str
    start: datetime
    end: datetime
    tags: dict[str, str] | None = None


def read_sources(paths: Sequence[str | Path]) -> Readings:
    """Merge several CSV files in time order (duplicates dropped)."""
    readings: Readings | None = None
    for p in paths:
        r = read_csv(p)
        readings = r if readings is None else readings.merge(r)
    if readings is None or len(readings.times) == 0:
        raise ValueError("no readings in the data files")
    return readings


def read_influx(storage, source: InfluxSource) -> Readings:
    """Readings from InfluxDB through a shared.storage Storage (1.x InfluxQL or 2.x Flux)."""
    rows = storage.query_series(source.measurement, source.field, source.start, source.end, source.tags)
    return Readings.from_rows(rows)


def to_slots(readings: Readings, kind: str = "counter") -> SlotSeries:
    if kind == "counter":
        return counter_to_slots(readings)
    if kind == "power":
        return power_to_slots(readings)
    raise ValueError(f"input kind must be counter (kWh) or power (W), not {kind!r}")


def load(paths: Sequence[str | Path], kind: str = "counter") -> SlotSeries:
    return to_slots(read_sources(paths), kind)
