"""The two retention policies on InfluxDB 1.x: raw readings expire after `raw_days`, what lasts stays in `keep`.

Creating or altering a policy needs an admin. The agent does it when `manage_policies` is on and its user may
(a development setup, `create_database = true`); otherwise the influxdb role's setup script does it as the admin
(ansible/roles/influxdb/files/influxdb1_setup.py, the same rule) and the agent only reads and reports the state.

Shortening the raw policy deletes what is older. It is done only when nothing is lost: the raw policy holds no
reading older than the new duration, or every such reading is covered by the kept part (device_slots from the
oldest reading on, and energy_flow, forecast and forecast_skill copied into the keep policy — what the agent's
migration does for a database that kept everything in `autogen` before).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from edge_agent.retention.config import RetentionConfig
from shared.schema import AGENT, DEVICE_SLOTS, KEPT_MEASUREMENTS, SLOT_NS
from shared.storage import Storage, StorageError
from shared.storage.influx1 import quote_ident

log = logging.getLogger(__name__)


@dataclass
class Policy:
    name: str
    duration_h: float  # 0: forever
    shard_h: float
    default: bool


def _hours(text: str) -> float:
    """InfluxDB's duration text ("2160h0m0s", "0s") in hours."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)([hms])", text or "0s"):
        total += float(value) * {"h": 1, "m": 1 / 60, "s": 1 / 3600}[unit]
    return total


def policies(storage: Storage, database: str) -> dict[str, Policy]:
    rows = storage.query(f"SHOW RETENTION POLICIES ON {quote_ident(database)}")
    return {r["name"]: Policy(r["name"], _hours(r.get("duration", "0s")), _hours(r.get("shardGroupDuration", "0s")),
                              bool(r.get("default"))) for r in rows if "name" in r}


def raw_policy_name(storage: Storage, database: str, configured: str | None) -> str | None:
    if configured:
        return configured
    return next((p.name for p in policies(storage, database).values() if p.default), None)


def first_time(storage: Storage, source: str) -> int | None:
    """The time of the oldest point of a measurement (ns), None when it has none."""
    rows = storage.query(f"SELECT * FROM {source} ORDER BY time ASC LIMIT 1")
    return int(rows[0]["time"]) if rows else None


def device_measurements(storage: Storage, database: str, rp: str | None, exclude=()) -> list[str]:
    """Measurements holding device readings in the raw policy (not the agent's own)."""
    import fnmatch

    names = [r["name"] for r in storage.query("SHOW MEASUREMENTS") if "name" in r]
    skip = KEPT_MEASUREMENTS | {AGENT}
    return [m for m in names if m not in skip and not any(fnmatch.fnmatchcase(m, g) for g in exclude)]


def qualified(database: str, rp: str | None, measurement: str) -> str:
    if rp:
        return f"{quote_ident(database)}.{quote_ident(rp)}.{quote_ident(measurement)}"
    return quote_ident(measurement)


def uncovered(storage: Storage, database: str, raw_rp: str, keep_rp: str, cutoff_ns: int,
              aggregated: bool = True) -> list[str]:
    """What shortening the raw policy to `cutoff_ns` would lose (empty: nothing). `aggregated`: the agent has
    aggregated every raw reading up to now (it may still be catching up with the history)."""
    out = []
    devices = device_measurements(storage, database, raw_rp)
    oldest_raw = [t for m in devices if (t := first_time(storage, qualified(database, raw_rp, m))) is not None]
    if oldest_raw and min(oldest_raw) < cutoff_ns:
        kept = first_time(storage, qualified(database, keep_rp, DEVICE_SLOTS))
        if not aggregated or kept is None or kept > (min(oldest_raw) // SLOT_NS + 1) * SLOT_NS:
            out.append("device readings older than the raw retention are still being aggregated")
    names = {r["name"] for r in storage.query("SHOW MEASUREMENTS") if "name" in r}
    for m in sorted((KEPT_MEASUREMENTS - {DEVICE_SLOTS}) & names):
        in_raw = first_time(storage, qualified(database, raw_rp, m))
        if in_raw is None or in_raw >= cutoff_ns:
            continue
        in_keep = first_time(storage, qualified(database, keep_rp, m))
        if in_keep is None or in_keep > in_raw:
            out.append(f"{m} not yet copied into {keep_rp}")
    return out


def ensure(storage: Storage, database: str, rc: RetentionConfig, raw_rp: str | None, now_ns: int | None = None,
           may_shorten: bool = True) -> dict:
    """Create the keep policy and shorten the raw one when allowed and safe; returns the state for the status:
    {"raw_policy", "raw_days" (in force; None = forever), "keep_policy", "keep_exists", "pending": why the raw
    policy is not shortened yet, or None}."""
    now_ns = now_ns or time.time_ns()
    state: dict = {"raw_policy": raw_rp, "keep_policy": rc.keep_policy, "raw_days_configured": rc.raw_days,
                   "pending": None}
    pols = policies(storage, database)
    if rc.keep_policy not in pols and rc.manage_policies:
        _admin(storage, f"CREATE RETENTION POLICY {quote_ident(rc.keep_policy)} ON {quote_ident(database)} "
                        f"DURATION {rc.keep_duration} REPLICATION 1 SHARD DURATION {rc.keep_shard_days * 24}h", state)
        pols = policies(storage, database)
    state["keep_exists"] = rc.keep_policy in pols
    raw = pols.get(raw_rp or "")
    state["raw_days"] = round(raw.duration_h / 24, 3) if raw and raw.duration_h else None
    if raw is None:
        state["pending"] = f"raw policy {raw_rp!r} not found"
        return state
    want_h = rc.raw_days * 24
    if raw.duration_h and abs(raw.duration_h - want_h) < 1 and abs(raw.shard_h - rc.raw_shard) < 0.5:
        return state
    if not state["keep_exists"]:
        state["pending"] = f"keep policy {rc.keep_policy!r} missing"
        return state
    if not raw.duration_h or raw.duration_h > want_h:
        lost = uncovered(storage, database, raw.name, rc.keep_policy, now_ns - int(want_h * 3600e9), may_shorten)
        if lost:
            state["pending"] = "; ".join(lost)
            return state
    if rc.manage_policies:
        _admin(storage, f"ALTER RETENTION POLICY {quote_ident(raw.name)} ON {quote_ident(database)} "
                        f"DURATION {rc.raw_duration} SHARD DURATION {rc.raw_shard}h", state)
        raw = policies(storage, database).get(raw.name, raw)
        state["raw_days"] = round(raw.duration_h / 24, 3) if raw.duration_h else None
    if not raw.duration_h or abs(raw.duration_h - want_h) >= 1:
        state["pending"] = state.get("pending") or "needs an admin: run the influxdb role (or ALTER RETENTION POLICY)"
    return state


def _admin(storage: Storage, statement: str, state: dict) -> None:
    try:
        storage.query(statement)
        log.info("retention: %s", statement)
    except StorageError as exc:
        if exc.status in (401, 403) or "requires admin" in str(exc):
            state["pending"] = "the database user may not manage retention policies (an admin must: the influxdb role)"
            log.warning("retention: %s refused (%s): an admin must do it", statement.split(" ON ")[0], exc)
            return
        raise
