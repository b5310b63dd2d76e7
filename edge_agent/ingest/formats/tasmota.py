"""`tasmota`: `tele/<topic>/SENSOR` telemetry of a Tasmota device.

Every sensor object of the message becomes one point: `ENERGY` of a plug, the object an SML meter script names
(`>M` line `+1,3,s,0,9600,SML` → `"SML": {"Total_in": …}`), `TIC` of a French Linky meter (Teleinfo), `ANALOG`,
`DS18B20`, `BME280` … Its numbers are the fields (arrays become `Power_0`, `Power_1`; nested objects are joined
with `_`); strings (`TotalStartTime`, `Id`) and top-level values that are not objects (`TempUnit`) are not
measurements. Numbers sent as text (Teleinfo's `"BASE":"007970903"`, the grid counter) are stored with
`numeric_strings = true`; without it they are counted and reported (`numeric_text_skipped`, a log line, `rules
test`), never dropped without a word. The object's name becomes the tag `sensor` (measurement: the rule's
`measurement`, default `tasmota`), or with `sensor_as = "measurement"` the measurement itself. `Time` is the
device's local time, read in the rule's `timezone`.
"""

from __future__ import annotations

from edge_agent.ingest.formats.base import (
    FormatConfigError,
    Points,
    Reject,
    decode_json,
    object_fields,
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
    if not isinstance(rule.numeric_strings, bool):
        raise FormatConfigError("numeric_strings", "expected true or false")
    as_tag = rule.sensor_as == "tag"
    measurement = rule.measurement or "tasmota"
    tz = rule.timezone
    text = rule.numeric_strings

    def parse(named: dict[str, str], payload: bytes, received_ns: int) -> Points:
        doc = decode_json(payload)
        if type(doc) is not dict:
            raise Reject("wrong_type", "payload must be a JSON object")
        time_ns = parse_time(doc["Time"], tz) if "Time" in doc else received_ns
        tags = static_tags(rule, named)
        points = Points()
        skipped: list[tuple[str, str]] = []
        for name, obj in doc.items():
            if type(obj) is not dict:
                continue
            fields = object_fields(obj, name, text, skipped)
            if fields:
                if as_tag:
                    points.append(Point(measurement, {**tags, "sensor": name}, fields, time_ns))
                else:
                    points.append(Point(name, dict(tags), fields, time_ns))
        if not points:
            hint = (f" ({', '.join(p for p, _ in skipped[:5])} sent as text: set numeric_strings = true)"
                    if skipped else "")
            raise Reject("missing_field", f"no sensor object with numbers (ENERGY, an SML meter, …){hint}")
        return points.with_skipped(skipped)

    return parse
