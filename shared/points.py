"""A time-series point and its InfluxDB line-protocol encoding (used by the edge, the server and the tests)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

FieldValue = float | int | str | bool


def _escape_key(text: str) -> str:
    """Escape a measurement-free key (tag key, tag value, field key): commas, equals signs, spaces."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _field_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"field value {value!r} is not finite")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"unsupported field type {type(value).__name__}")


@dataclass(frozen=True)
class Point:
    """One point: measurement, tags, fields and a timestamp in nanoseconds since the epoch (UTC)."""

    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, FieldValue] = field(default_factory=dict)
    time_ns: int = 0

    def validate(self) -> None:
        """Raise ValueError if InfluxDB would reject this point (empty names, no fields, non-finite floats)."""
        if not self.measurement:
            raise ValueError("empty measurement name")
        if not self.fields:
            raise ValueError(f"point {self.measurement!r} has no fields")
        for key, value in self.tags.items():
            if not key or value == "" or "\n" in key or "\n" in str(value):
                raise ValueError(f"invalid tag {key!r}={value!r}")
        for key, value in self.fields.items():
            if not key or "\n" in key:
                raise ValueError(f"invalid field key {key!r}")
            _field_value(value)

    def to_line(self) -> str:
        """InfluxDB line protocol; tags sorted by key (the order InfluxDB prefers)."""
        head = _escape_measurement(self.measurement)
        for key in sorted(self.tags):
            head += f",{_escape_key(key)}={_escape_key(str(self.tags[key]))}"
        body = ",".join(f"{_escape_key(k)}={_field_value(v)}" for k, v in self.fields.items())
        return f"{head} {body} {int(self.time_ns)}"


def to_lines(points: list[Point]) -> bytes:
    """A write body: one line per point."""
    return ("\n".join(p.to_line() for p in points) + "\n").encode("utf-8")


def line_head(line: bytes) -> tuple[str, int]:
    """Measurement and timestamp (ns) of one line-protocol line (for listeners that only need those)."""
    text = line.decode("utf-8")
    i = 0
    while i < len(text) and text[i] not in ", ":
        i += 2 if text[i] == "\\" else 1
    return text[:i].replace("\\", ""), int(text.rsplit(" ", 1)[1])
