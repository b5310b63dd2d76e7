"""A time-series point and its InfluxDB line-protocol encoding (used by the edge, the server and the tests).

Names are checked before they are encoded, because line protocol cannot carry everything a device may send,
and what it cannot carry does not fail loudly: a newline splits one point into two (an injection), a leading
`#` turns the line into a comment (counted as stored, never stored), a trailing backslash escapes the separator
after it. The rules below were checked against a real InfluxDB 1.6.7 (tests/shared/test_points_fuzz.py):

- measurement, tag keys, tag values, field keys: 1-256 characters, no control characters (U+0000-U+001F, U+007F),
  no backslash (InfluxDB 1.x keeps escape backslashes literally while 2.x removes them: no encoding round-trips
  on both); a measurement must not start with `#`; `time` is not a tag or field key (1.x refuses it).
- string field values: no control characters (a line is then always exactly one point).
- time: within InfluxDB's range (±9,223,372,036,854,775,806 ns).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

FieldValue = float | int | str | bool

MAX_NAME_CHARS = 256
MAX_TIME_NS = 9_223_372_036_854_775_806
RESERVED_KEYS = frozenset({"time"})
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidPoint(ValueError):
    """A point InfluxDB would reject or misread. `reason` is `invalid_name`, `invalid_value` or `bad_timestamp`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def name_problem(text: object, what: str = "name") -> str | None:
    """Why `text` cannot be a measurement, tag or field name in line protocol (None: it can)."""
    if not isinstance(text, str):
        return f"{what} must be a string, got {type(text).__name__}"
    if not text:
        return f"{what} is empty"
    if len(text) > MAX_NAME_CHARS:
        return f"{what} has {len(text)} characters, at most {MAX_NAME_CHARS}"
    bad = _FORBIDDEN.search(text)
    if bad:
        return f"{what} {text[:40]!r} contains {bad.group()!r} (control characters and backslashes are refused)"
    return None


def _check_name(text: object, what: str) -> None:
    problem = name_problem(text, what)
    if problem:
        raise InvalidPoint("invalid_name", problem)


def _escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key: commas, equals signs, spaces."""
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_measurement(text: str) -> str:
    return text.replace(",", "\\,").replace(" ", "\\ ")


def _field_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"field value {value!r} is not finite")
        return repr(float(value))  # np.float64 is a float whose repr is `np.float64(…)`
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
        """Raise InvalidPoint (a ValueError) if InfluxDB would reject or misread this point."""
        _check_name(self.measurement, "measurement")
        if self.measurement.startswith("#"):
            raise InvalidPoint("invalid_name", f"measurement {self.measurement[:40]!r} starts with '#' "
                                               "(a comment in line protocol)")
        if not self.fields:
            raise InvalidPoint("invalid_value", f"point {self.measurement!r} has no fields")
        for key, value in self.tags.items():
            _check_name(key, "tag key")
            _check_name(value, f"tag {key!r}")
            if key in RESERVED_KEYS:
                raise InvalidPoint("invalid_name", f"{key!r} cannot be a tag key")
        for key, value in self.fields.items():
            _check_name(key, "field key")
            if key in RESERVED_KEYS:
                raise InvalidPoint("invalid_name", f"{key!r} cannot be a field key")
            if isinstance(value, str) and _CONTROL.search(value):
                raise InvalidPoint("invalid_value", f"field {key!r} holds control characters")
            try:
                _field_value(value)
            except (TypeError, ValueError) as exc:
                raise InvalidPoint("invalid_value", f"field {key!r}: {exc}") from None
        if not isinstance(self.time_ns, int) or isinstance(self.time_ns, bool) \
                or not -MAX_TIME_NS <= self.time_ns <= MAX_TIME_NS:
            raise InvalidPoint("bad_timestamp", f"time {self.time_ns!r} ns is outside InfluxDB's range")

    def series_key(self) -> str:
        """The series in line protocol: the escaped measurement and tags, sorted by key (the order InfluxDB
        prefers and keys its index by)."""
        head = escape_measurement(self.measurement)
        for key in sorted(self.tags):
            head += f",{_escape_key(key)}={_escape_key(str(self.tags[key]))}"
        return head

    def to_line(self, series_key: str | None = None) -> str:
        """InfluxDB line protocol (`series_key`: this point's, when the caller has it already)."""
        body = ",".join(f"{_escape_key(k)}={_field_value(v)}" for k, v in self.fields.items())
        return f"{series_key or self.series_key()} {body} {int(self.time_ns)}"


def to_lines(points: list[Point]) -> bytes:
    """A write body: one line per point."""
    return ("\n".join(p.to_line() for p in points) + "\n").encode("utf-8")


def split_lines(body: bytes) -> list[bytes]:
    """The lines of a write body, each ending in b"\\n". Only `\\n` separates points (not `\\r`, which
    `bytes.splitlines` would also split on)."""
    return [line + b"\n" for line in body.split(b"\n") if line]


# A line-protocol line that cannot run into the next and means one thing to every parser: the grammar Point.to_line
# writes. Measurement, tags and field keys escape only space, comma and equals sign, and a `"` in them is an ordinary
# character (InfluxDB stores `m,device=a"b v=1` with the tag `a"b`; issue 23: a quote in a device name made every
# reading of that device a dead letter); a field value is a quoted string (escapes `\"` and `\\` only) or a bare
# token without quotes, backslashes, spaces or commas (InfluxDB 1.x opens a string at any `"` in a value, e.g.
# `v=1"x`, and then swallows the next lines); an optional integer timestamp. Anything else is held back. Each
# alternative excludes the others by its first byte: matching is linear.
_NAME = rb'(?:[^ ,=\\\n]|\\[ ,=])'
_VALUE = rb'(?:"(?:[^"\\\n]|\\["\\])*"|[^ ",=\\\n]+)'
_FIELD = _NAME + rb'+=' + _VALUE
_SELF_CONTAINED = re.compile(rb'(?:[^ ,\\\n]|\\[ ,=])+(?:,' + _NAME + rb'+=' + _NAME + rb'+)* '
                             + _FIELD + rb'(?:,' + _FIELD + rb')*(?: -?\d+)?\n?')


def contained_lines(body: bytes) -> tuple[bytes, list[bytes]]:
    """Split a write body into the lines that are self-contained and those that are not.

    InfluxDB reads a backslash before a newline as an escaped newline and lets a quoted string run over line
    ends, so one damaged line (from an older agent's spool, say) can swallow the good line after it. The points
    this agent writes hold no quotes and no backslashes at all, so the check costs two scans of the body."""
    if b'"' not in body and b"\\\n" not in body:
        return body, []
    good, bad = [], []
    for line in split_lines(body):
        (good if _SELF_CONTAINED.fullmatch(line) else bad).append(line)
    return b"".join(good), bad


def line_head(line: bytes) -> tuple[str, int | None] | None:
    """Measurement and timestamp (ns, None if absent) of one line-protocol line; None if it has no measurement.

    Never raises: the drainer calls it on whatever the database refused."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if not text or text.startswith("#"):
        return None
    i = 0
    while i < len(text) and text[i] not in ", ":
        i += 2 if text[i] == "\\" else 1
    measurement = text[:min(i, len(text))].replace("\\,", ",").replace("\\ ", " ")
    if not measurement:
        return None
    last = text.rsplit(" ", 1)[-1] if " " in text[i:] else ""
    time_ns = int(last) if re.fullmatch(r"-?\d{1,19}", last) else None
    return measurement, time_ns
