"""`seed_json`: the hackathon's devices.

`{"FeatureType": "EnergyMeter", "device_id": …, "Power": 1.0, "EnergyIn": …, "time": …}`: FeatureType is the
measurement, device_id/device_name/device_type are tags, every other value must be a number.
"""

from __future__ import annotations

from edge_agent.ingest.formats.base import Reject, decode_json, number, parse_time, static_tags
from shared.points import Point

TIME_KEYS = ("time", "timestamp", "Timestamp", "Time", "ts")
SEED_TAG_KEYS = {"device_id": "device_id", "DeviceId": "device_id", "device_name": "device_name",
                 "DeviceName": "device_name", "device_type": "device_type", "DeviceType": "device_type"}


def parse_seed_json(rule, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
    doc = decode_json(payload)
    if not isinstance(doc, dict):
        raise Reject("wrong_type", f"payload must be a JSON object, got {type(doc).__name__}")
    measurement = doc.get("FeatureType") or rule.measurement or named.get("measurement")
    if not measurement:
        raise Reject("missing_field", "FeatureType is missing")
    if not isinstance(measurement, str):
        raise Reject("wrong_type", "FeatureType must be a string")
    tags = static_tags(rule, named)
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
            fields[key] = number(value, key)
    if not fields:
        raise Reject("missing_field", "no numeric field in the payload")
    return [Point(measurement, tags, fields, time_ns)]
