"""Reading a node's InfluxDB (read-only credentials stored with the node): history pulls into the server's cache and
the live-skill figures. Errors say what went wrong but show nothing of the answer: the URL may point at another
service than InfluxDB."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.config import ServerConfig
from server.files import open_private, private_dir
from shared.schema import (
    SLOT_NS,
    WEATHER_FORECAST,
    WEATHER_MEASURED,
    WEATHER_SLOTS,
    WEATHER_SOURCE_TAG,
    WEATHER_TEMPERATURE_FIELD,
)

DEFAULT_SERIES = ("EnergyMeter", "EnergyIn")  # measurement and field pulled when neither node nor job names one
TEMPERATURE_SUFFIX = ".temperature.csv"

Progress = Callable[[float, str], None]  # (fraction done 0..1, stage)


def storage_config(influx: dict):
    """The node's InfluxDB connection as a StorageConfig (what to read is the pull's, not the storage's)."""
    from shared.storage import StorageConfig

    return StorageConfig(**{k: v for k, v in influx.items() if k in StorageConfig.__dataclass_fields__
                            and k not in ("measurement", "field", "tags", "keep_policy")})


def open_node_storage(influx: dict):
    """A Storage on the node's InfluxDB that reads what lasts (forecast, skill, aggregates) from the agent's keep
    policy when the database has one (`keep_policy` of the node's settings, default `keep`: the agent's
    [retention] default), else from the default policy (an agent without retention)."""
    from shared.storage import StorageError, open_storage

    st = open_storage(storage_config(influx))
    if st.config.version == 1:
        keep = influx.get("keep_policy") or "keep"
        try:
            names = {r.get("name") for r in st.query(f'SHOW RETENTION POLICIES ON "{st.config.database}"')}
        except StorageError:
            names = set()
        st.config.keep_policy = keep if keep in names else None
    else:  # 2.x: the keep bucket only when the node names one (untested: no 2.x server here)
        st.config.keep_policy = influx.get("keep_policy") or None
    return st


def safe_errors(url: str, fn, *args):
    """fn(*args) with the storage's errors turned into a ValueError naming the URL and the HTTP status only."""
    from shared.storage import StorageError

    try:
        return fn(*args)
    except StorageError as exc:
        if exc.status in (401, 403):
            raise ValueError(f"InfluxDB at {url} refused the credentials (HTTP {exc.status})") from None
        if exc.status == 404:
            raise ValueError(f"InfluxDB at {url}: database not found (HTTP 404)") from None
        if exc.status:
            raise ValueError(f"InfluxDB at {url}: query failed (HTTP {exc.status})") from None
        reason = re.search(r"\[Errno \d+\][\w ]+|timed out", str(exc))
        if "unreachable" in str(exc):
            raise ValueError(f"InfluxDB at {url} unreachable" + (f": {reason.group(0)}" if reason else "")) from None
        raise ValueError(f"InfluxDB at {url} refused the query (check measurement, field and tags)") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        raise ValueError(f"InfluxDB at {url}: the answer is not an InfluxDB query result") from None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def influx_of(node: dict) -> dict:
    influx = json.loads(node["influx"] or "{}")
    if not influx.get("url"):
        raise ValueError(f"node {node['name']} has no InfluxDB connection configured")
    return influx


def pull_history(config: ServerConfig, node: dict, params: dict, progress: Progress) -> dict:
    """The node's readings between params start and end into data_dir/cache/node-<id>/<start>-<end>.csv
    (time,value; 0600; it appears only when complete), week by week with progress; {"file", "rows"} — and, when the
    agent recorded the outdoor temperature (`weather_slots`), {"temperature": pull_temperature's summary}."""
    influx = influx_of(node)
    start, end = _time(params["start"]), _time(params["end"])
    series = (params.get("measurement") or influx.get("measurement", DEFAULT_SERIES[0]),
              params.get("field") or influx.get("field", DEFAULT_SERIES[1]),
              params.get("tags") or influx.get("tags") or None)
    folder = private_dir(private_dir(config.cache_dir) / f"node-{node['id']}")
    out = folder / f"{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.csv"
    st = safe_errors(influx["url"], open_node_storage, influx)
    tmp = out.with_suffix(".part")
    try:
        with open_private(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "value"])
            rows = _weeks(st, influx["url"], series, start, end, w, progress)
        if rows == 0:
            raise ValueError(f"no {series[0]}.{series[1]} readings between {params['start']} and {params['end']}")
        try:
            temperature = pull_temperature(st, influx["url"], start, end, temperature_file(out))
        except ValueError as exc:  # the energy pull stands; the job's log says why the temperature is missing
            temperature = {"error": str(exc)}
        os.replace(tmp, out)
    finally:
        st.close()
        tmp.unlink(missing_ok=True)
    result = {"file": str(out), "rows": rows, "series": f"{series[0]}.{series[1]}"}
    return result | ({"temperature": temperature} if temperature else {})


def temperature_file(energy_file: Path) -> Path:
    """The outdoor temperature pulled with an energy file: beside it, `<start>-<end>.temperature.csv`."""
    return energy_file.with_name(energy_file.stem + TEMPERATURE_SUFFIX)


def is_temperature_file(path: Path) -> bool:
    return path.name.endswith(TEMPERATURE_SUFFIX)


def pull_temperature(st, url: str, start: datetime, end: datetime, out: Path) -> dict | None:
    """The agent's outdoor temperature record (`weather_slots`, field `temperature_c`, one point per slot at its
    end, tag `source` measured | forecast: edge_agent/forecast/weather.py) between start and end into `out`, month
    by month; the measured value where the slot has one, else what the forecast said. None (and no file) when the
    house has no record. A failed query costs only the temperature: the energy pull stands, the file of an earlier
    pull of the same range is gone (the push gate finds the file by name), and the answer's content is never shown
    (safe_errors).

    The file is a readings CSV (`time,value`, UTC) as training.weather.load_temperature reads it: each slot's °C at
    the slot's middle (end − 7.5 min), since load_temperature interpolates readings at slot middles — so it gets
    every slot's value back exactly, and slots the agent did not record stay unknown (up to its 3-hour
    interpolation)."""
    out.unlink(missing_ok=True)  # what lies beside the energy file is this pull's record or nothing
    slots: dict[int, tuple[float, str]] = {}
    t = start
    while t < end:
        t2 = min(end, t + timedelta(days=30))
        for source in (WEATHER_FORECAST, WEATHER_MEASURED):  # measured last: it wins
            for ns, v in safe_errors(url, st.query_series, WEATHER_SLOTS, WEATHER_TEMPERATURE_FIELD, t, t2,
                                     {WEATHER_SOURCE_TAG: source}):
                slots[int(ns)] = (v, source)
        t = t2
    if not slots:
        return None
    tmp = out.with_suffix(".part")
    try:
        with open_private(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "value"])
            for ns in sorted(slots):
                middle = datetime.fromtimestamp((ns - SLOT_NS // 2) / 1e9, UTC)
                w.writerow([middle.isoformat(timespec="milliseconds").replace("+00:00", "Z"), slots[ns][0]])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    measured = sum(1 for _, s in slots.values() if s == WEATHER_MEASURED)
    return {"file": str(out), "slots": len(slots), "measured": measured,
            "first": _iso(min(slots)), "last": _iso(max(slots))}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def first_raw(st, series: tuple, start: datetime, end: datetime) -> datetime | None:
    """The time of the oldest raw reading of the series in [start, end) (None: none)."""
    where = [f"time >= {int(start.timestamp() * 1e9)}", f"time < {int(end.timestamp() * 1e9)}"]
    where += [f"\"{k}\" = '{v}'" for k, v in (series[2] or {}).items()]
    rows = st.query(f'SELECT first("{series[1]}") FROM {st.source(series[0])} WHERE {" AND ".join(where)}')
    return datetime.fromtimestamp(int(rows[0]["time"]) / 1e9, UTC) if rows else None


def _aggregates(st, series: tuple, t: datetime, t2: datetime) -> list[tuple[int, float]]:
    """What the agent kept of the series once its raw readings expired (device_slots, docs/pi.md): a counter's
    value at each slot end, else the slot's mean."""
    from shared.schema import DEVICE_SLOTS, DEVICE_SLOTS_MEASUREMENT_TAG

    tags = dict(series[2] or {}) | {DEVICE_SLOTS_MEASUREMENT_TAG: series[0]}
    return (st.query_series(DEVICE_SLOTS, series[1], t, t2, tags)
            or st.query_series(DEVICE_SLOTS, f"{series[1]}_mean", t, t2, tags))


def _weeks(st, url: str, series: tuple, start: datetime, end: datetime, w, progress: Progress) -> int:
    """Week by week; before the oldest raw reading (expired by the agent's retention) from the aggregates."""
    rows, t, total = 0, start, (end - start).total_seconds()
    raw_from = start
    if st.config.version == 1 and st.config.keep_policy:
        raw_from = safe_errors(url, first_raw, st, series, start, end) or end
    while t < end:
        t2 = min(end, t + timedelta(days=7))
        got = []
        if t < raw_from:
            got += safe_errors(url, _aggregates, st, series, t, min(t2, raw_from))
        if t2 > raw_from:
            got += safe_errors(url, st.query_series, *series[:2], max(t, raw_from), t2, series[2])
        for ns, v in got:
            w.writerow([datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z"), v])
            rows += 1
        t = t2
        progress((t - start).total_seconds() / total, f"pulled to {t:%Y-%m-%d}")
    return rows


def node_skill(node: dict, status: dict, now: datetime) -> dict:
    """The live skill of the node's active models (server.skill) from its InfluxDB."""
    from server.skill import live_skill

    influx = influx_of(node)
    active = {name: m["active"]["version"] for name, m in (status.get("models") or {}).items() if m.get("active")}
    if not active:
        return {}
    st = safe_errors(influx["url"], open_node_storage, influx)
    try:
        return safe_errors(influx["url"], live_skill, st, influx, active, now, DEFAULT_SERIES)
    finally:
        st.close()


def history_bytes(files: list[str]) -> list[tuple[str, bytes]]:
    """The training data handed to a task: (file name, content) per file."""
    return [(Path(f).name, Path(f).read_bytes()) for f in files]
