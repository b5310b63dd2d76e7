"""`tasmota`: `tele/<topic>/SENSOR` telemetry of a Tasmota device.

Every sensor object of the message becomes one point: `ENERGY` of a plug, the object an SML meter script names
(`>M` line `+1,3,s,0,9600,SML` → `"SML": {"Total_in": …}`), `ANALOG`, `DS18B20`, `BME280` … Its numbers are the
fields (arrays become `Power_0`, `Power_1`; nested objects are joined with `_`); strings (`TotalStartTime`,
`Id`) and top-level values that are not objects (`TempUnit`) are not measurements. The object's name becomes
the tag `sensor` (measurement: the rule's `measurement`, default `tasmota`), or with `sensor_as = "measurement"`
the measurement itself. `Time` is the device's local time, read in the rule's `timezone`.
"""

from __future__ import annotations

from edge_agent.ingest.formats.base import (
    FormatConfigError,
    Reject,
    decode_json,
    number,
    numeric_leaves,
    parse_time,
    static_tags,
)
from shared.points import Point

SENSOR_AS = ("tag", "measurement")


def compile_tasmota(rule):
    if rule.sensor_as not in SENSOR_AS:
        raise FormatConfigError("sensor_as", f"must be one of {', '.join(SENSOR_AS)}, got {rule.sensor_as!r}")
    if rule.sensor_as == "measurement" and rule.measurement:
        raise FormatConfigError("measurement", "with sensor_as = \"measurement\" the sensor object names the "
                                               "measurement: remove `measurement`")
    as_tag = rule.sensor_as == "tag"
    measurement = rule.measurement or "tasmota"
    tz = rule.timezone

    def parse(named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
        doc = decode_json(payload)
        if type(doc) is not dict:
            raise Reject("wrong_type", "payload must be a JSON object")
        time_ns = parse_time(doc["Time"], tz) if "Time" in doc else received_ns
        tags = static_tags(rule, named)
        points = []
        for name, obj in doc.items():
            if type(obj) is not dict:
                continue
            fields = {n: number(v, f"{name}.{p}") for p, n, v in numeric_leaves(obj)}
            if fields:
                if as_tag:
                    points.append(Point(measurement, {**tags, "sensor": name}, fields, time_ns))
                else:
                    points.append(Point(name, dict(tags), fields, time_ns))
        if not points:
            raise Reject("missing_field", "no sensor object with numbers (ENERGY, an SML meter, …)")
        return points

    return parse
