"""Training data: CSV files (annotated Flux export, the same without annotations, plain time,value) or an
InfluxDB 1.x/2.x query → slots (shared.series)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from shared.schema import SLOT_NS
from shared.series import Readings, SlotSeries, counter_to_slots, power_to_slots, read_csv

# a cumulative counter in kWh, power in W, or kWh per slot labelled by the slot's start in local time (read_local_slots)
INPUT_KINDS = ("counter", "power", "local-slots")
LOCAL_TIME, LOCAL_ENERGY = "Timestamp", "Energy_kWh"
LOCAL_TEMPERATURE = ("daily_avgTmp", "temperature_c")  # an optional temperature column (°C)


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


@dataclass
class LocalSlots:
    """A local-time slot CSV read into UTC slots: kWh, the temperature column if there is one, and what was fixed."""

    energy: SlotSeries
    temperature: SlotSeries | None
    duplicates: int  # rows of a timestamp seen before (not a repeated hour of a DST change): the first is kept
    nonexistent: int  # rows at a local time that does not exist (the hour skipped in spring): dropped


def read_local_slots(path: str | Path, timezone: str) -> LocalSlots:
    """A CSV of kWh per 15-minute slot labelled by the slot's START in naive local wall-clock time (columns
    `Timestamp`, `Energy_kWh`, optionally `daily_avgTmp` or `temperature_c` in °C), e.g. a smart meter's export.

    Local time is made UTC with `timezone`: a wall-clock time that occurs twice (the hour repeated when DST ends)
    is the earlier instant at its first occurrence and the later one at its second; any other repeated timestamp
    is a duplicate (the first row is kept); a time that does not exist (the hour DST skips) is dropped."""
    tz = ZoneInfo(timezone)
    seen: dict[str, int] = {}
    energy: dict[int, float] = {}
    temperature: dict[int, float] = {}
    duplicates = nonexistent = 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if LOCAL_TIME not in cols or LOCAL_ENERGY not in cols:
            raise ValueError(f"{path}: a local-slots CSV needs the columns {LOCAL_TIME} and {LOCAL_ENERGY}, not {cols}")
        temp_col = next((c for c in LOCAL_TEMPERATURE if c in cols), None)
        for row in reader:
            text = row[LOCAL_TIME].strip()
            occurrence = seen.get(text, 0)
            seen[text] = occurrence + 1
            try:
                naive = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{path}: bad {LOCAL_TIME} {text!r}") from None
            first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
            if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
                nonexistent += 1
                continue
            ambiguous = first.utcoffset() != second.utcoffset()
            if occurrence and not (ambiguous and occurrence == 1):
                duplicates += 1
                continue
            start = (second if ambiguous and occurrence == 1 else first).astimezone(UTC)
            end_ns = int((start + timedelta(seconds=SLOT_NS // 10**9)).timestamp()) * 10**9
            energy[end_ns] = _number(row[LOCAL_ENERGY])
            if temp_col is not None:
                temperature[end_ns] = _number(row[temp_col])
    if not energy:
        raise ValueError(f"{path}: no rows")
    return LocalSlots(_grid(energy), _grid(temperature) if temperature else None, duplicates, nonexistent)


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def _grid(by_end: dict[int, float]) -> SlotSeries:
    ends = np.array(sorted(by_end), dtype=np.int64)
    values = np.full(int((ends[-1] - ends[0]) // SLOT_NS) + 1, np.nan)
    values[(ends - ends[0]) // SLOT_NS] = [by_end[int(t)] for t in ends]
    return SlotSeries(int(ends[0]), values)


def to_slots(readings: Readings, kind: str = "counter") -> SlotSeries:
    if kind == "counter":
        return counter_to_slots(readings)
    if kind == "power":
        return power_to_slots(readings)
    raise ValueError(f"input kind must be counter (kWh) or power (W), not {kind!r}")


def load(paths: Sequence[str | Path], kind: str = "counter", timezone: str = "UTC") -> SlotSeries:
    if kind == "local-slots":
        if len(paths) != 1:
            raise ValueError("local-slots input reads exactly one --data file")
        return read_local_slots(paths[0], timezone).energy
    return to_slots(read_sources(paths), kind)
