"""Payload formats → points. Each parser raises `Reject(reason, detail)` for bad input; nothing is guessed.

Formats:
- `seed_json`: `{"FeatureType": "EnergyMeter", "device_id": …, "Power": 1.0, "EnergyIn": …, "time": …}`;
  FeatureType is the measurement, device_id/device_name/device_type are tags, every other value must be a number.
- `tasmota`: `tele/<dev>/SENSOR` JSON; the numbers under `ENERGY` (lists become `Name_0`, `Name_1`); `Time` is the
  device's local time, interpreted in the rule's `timezone`.
- `shelly_gen1`/`number`: a plain number; field from the rule's `field` or the topic's `+field` level.
- `shelly_gen2`: `<id>/status/<component>` JSON (numbers of the component object) or `<id>/events/rpc`
  `NotifyStatus` (every component object in `params`, timestamp `params.ts`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from shared.points import MAX_TIME_NS, Point

TIME_KEYS = ("time", "timestamp", "Timestamp", "Time", "ts")
SEED_TAG_KEYS = {"device_id": "device_id", "DeviceId": "device_id", "device_name": "device_name",
                 "DeviceName": "device_name", "device_type": "device_type", "DeviceType": "device_type"}


class Reject(Exception):
    """A message that cannot become points. `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str, rule: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.rule = rule


Parser = Callable[..., list[Point]]


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("not_utf8", f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None


# One decoder for all messages (json.loads with keyword arguments builds a new decoder per call).
# NaN/Infinity parse as floats and are then rejected as not_finite.
_DECODER = json.JSONDecoder(parse_constant=float)


def _json(payload: bytes) -> object:
    text = _text(payload)
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise Reject("not_json", f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise Reject("not_json", "payload is nested too deeply") from None


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Reject("wrong_type", f"{key} must be a number, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        value = float(value)
    except OverflowError:
        raise Reject("not_finite", f"{key} is too large for a float ({len(str(value))} digits)") from None
    if not math.isfinite(value):
        raise Reject("not_finite", f"{key} is {value}")
    return value


def parse_time(value: object, tz: str = "UTC") -> int:
    """Nanoseconds since the epoch from an ISO 8601 string or an epoch number (s, ms, µs or ns by magnitude)."""
    if isinstance(value, bool):
        raise Reject("bad_timestamp", f"timestamp {value!r}")
    if isinstance(value, int | float):
        try:
            if not math.isfinite(value) or value <= 0 or value > MAX_TIME_NS:
                raise Reject("bad_timestamp", f"timestamp {str(value)[:40]} is not a time InfluxDB can store")
        except OverflowError:  # an int too large to compare with a float
            raise Reject("bad_timestamp", f"timestamp of {len(str(value))} digits") from None
        for limit, factor in ((1e11, 1e9), (1e14, 1e6), (1e17, 1e3)):
            if value < limit:
                return int(round(value * factor))
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            t = datetime.fromisoformat(text)
            if t.tzinfo is None:
                t = t.replace(tzinfo=ZoneInfo(tz))
            return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000
        except (ValueError, OverflowError, OSError):
            raise Reject("bad_timestamp", f"timestamp {value[:40]!r} is not ISO 8601") from None
    raise Reject("bad_timestamp", f"timestamp of type {type(value).__name__}")


def _static_tags(rule, named: dict[str, str]) -> dict[str, str]:
    tags = {k: v for k, v in named.items() if k not in ("measurement", "field") and v}
    tags.update(rule.tags)
    return tags


def parse_seed_json(rule, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Reject("wrong_type", f"payload must be a JSON object, got {type(doc).__name__}")
    measurement = doc.get("FeatureType") or rule.measurement or named.get("measurement")
    if not measurement:
        raise Reject("missing_field", "FeatureType is missing")
    if not isinstance(measurement, str):
        raise Reject("wrong_type", "FeatureType must be a string")
    tags = _static_tags(rule, named)
    fields: dict[str, float] = {}
    time_ns = received_ns
    for key, value in doc.items():
        if key == "FeatureType":
            continue
        if key in SEED_TAG_KEYS:
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise Reject("wrong_type", f"{key} must be a string")
            if str(value):
                tags[SEED_TAG_KEYS[key]] = str(value)
        elif key in TIME_KEYS:
            time_ns = parse_time(value, rule.timezone)
        else:
            fields[key] = _number(value, key) * rule.scale
    if not fields:
        raise Reject("missing_field", "no numeric field in the payload")
    return [Point(measurement, tags, fields, time_ns)]


def parse_tasmota(rule, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Reject("wrong_type", "payload must be a JSON object")
    energy = doc.get("ENERGY")
    if not isinstance(energy, dict):
        raise Reject("missing_field", "ENERGY object is missing")
    fields: dict[str, float] = {}
    for key, value in energy.items():
        if key == "TotalStartTime":
            continue
        if isinstance(value, list):
            for i, v in enumerate(value):
                fields[f"{key}_{i}"] = _number(v, f"ENERGY.{key}[{i}]")
        else:
            fields[key] = _number(value, f"ENERGY.{key}")
    if not fields:
        raise Reject("missing_field", "ENERGY has no numbers")
    time_ns = parse_time(doc["Time"], rule.timezone) if "Time" in doc else received_ns
    return [Point(rule.measurement or "tasmota", _static_tags(rule, named), fields, time_ns)]


def parse_number(rule, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
    text = _text(payload).strip()
    try:
        value = float(text)
    except ValueError:
        raise Reject("wrong_type", f"payload {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise Reject("not_finite", f"payload is {text[:40]!r}")
    field = rule.field or named.get("field") or "value"
    measurement = rule.measurement or named.get("measurement") or "mqtt"
    return [Point(measurement, _static_tags(rule, named), {field: value * rule.scale}, received_ns)]


MAX_DEPTH = 8


def _component_fields(obj: dict, prefix: str, depth: int = 0) -> dict[str, float]:
    """Numbers of a Shelly gen2 component object; nested objects (e.g. `aenergy`) flattened with `_`."""
    if depth > MAX_DEPTH:
        raise Reject("too_deep", f"objects nested more than {MAX_DEPTH} levels deep")
    fields: dict[str, float] = {}
    for key, value in obj.items():
        if key == "id" or value is None:
            continue
        if isinstance(value, dict):
            fields.update(_component_fields(value, f"{prefix}{key}_", depth + 1))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            fields[f"{prefix}{key}"] = _number(value, f"{prefix}{key}")
        elif isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            for i, v in enumerate(value):
                fields[f"{prefix}{key}_{i}"] = _number(v, f"{prefix}{key}[{i}]")
        # strings/bools (e.g. "errors", "flags") are status text, not measurements
    return fields


def parse_shelly_gen2(rule, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Reject("wrong_type", "payload must be a JSON object")
    measurement = rule.measurement or "shelly"
    tags = _static_tags(rule, named)
    components: dict[str, dict] = {}
    time_ns = received_ns
    if doc.get("method") == "NotifyStatus" or "params" in doc:
        params = doc.get("params")
        if not isinstance(params, dict):
            raise Reject("missing_field", "NotifyStatus without params")
        if "src" in doc and isinstance(doc["src"], str):
            tags.setdefault("device", doc["src"])
        if "ts" in params:
            time_ns = parse_time(params["ts"])
        components = {k: v for k, v in params.items() if isinstance(v, dict)}
    else:
        component = named.get("component") or rule.field or "status"
        components = {component: doc}
    points = []
    for name, obj in components.items():
        fields = _component_fields(obj, "")
        if fields:
            points.append(Point(measurement, {**tags, "component": name}, fields, time_ns))
    if not points:
        raise Reject("missing_field", "no numeric values in the status")
    return points


PARSERS: dict[str, Parser] = {
    "seed_json": parse_seed_json,
    "tasmota": parse_tasmota,
    "shelly_gen1": parse_number,
    "number": parse_number,
    "shelly_gen2": parse_shelly_gen2,
}
