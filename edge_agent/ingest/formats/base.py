"""What every payload format shares: the reject, decoding, numbers, times and the walk over nested objects.

Everything here treats the payload as hostile (issue 13): the only exception that leaves is `Reject`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from shared.config import ConfigError
from shared.points import MAX_TIME_NS, Point

# Nested objects deeper than this are refused (`too_deep`): no device nests its values that far.
MAX_DEPTH = 8


class Reject(Exception):
    """A message that cannot become points. `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str, rule: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.rule = rule


class Ignored(Exception):
    """A message a rule takes that carries nothing to store, by design (a Shelly NotifyEvent, a status change
    without numbers): counted as `ignored` and shown by `rules test`, never dead-lettered (it is normal)."""

    def __init__(self, detail: str, rule: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.rule = rule


class Points(list):
    """A format's points, with the numbers it saw sent as text and did not store: `skipped` holds (path, text)
    pairs. They are counted (`numeric_text_skipped`), logged once per rule and path, and shown by `rules test`:
    a meter counter sent as `"BASE":"007970903"` must not vanish without a hint (issue 23)."""

    skipped: list[tuple[str, str]] | tuple[()] = ()

    def with_skipped(self, skipped: list[tuple[str, str]]) -> Points:
        if skipped:
            self.skipped = skipped
        return self


class FormatConfigError(ConfigError):
    """A rule's format-specific setting is invalid; `key` names it (e.g. `fields[1].path`). A ConfigError like every
    configuration error (shared/config.py); rules.compile_rule adds the rule's place."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


# A compiled rule's parser: (named topic levels, payload, receive time in ns) -> points.
BoundParser = Callable[[dict[str, str], bytes, int], list[Point]]


def decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("not_utf8", f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None


# One decoder for all messages (json.loads with keyword arguments builds a new decoder per call).
# NaN/Infinity parse as floats and are then rejected as not_finite.
_DECODER = json.JSONDecoder(parse_constant=float)


def decode_json(payload: bytes) -> object:
    text = decode_text(payload)
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise Reject("not_json", f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise Reject("not_json", "payload is nested too deeply") from None


def number(value: object, key: str) -> float:
    """A finite float from a JSON number (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Reject("wrong_type", f"{key} must be a number, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        value = float(value)
    except OverflowError:
        raise Reject("not_finite", f"{key} is too large for a float ({len(str(value))} digits)") from None
    if not math.isfinite(value):
        raise Reject("not_finite", f"{key} is {value}")
    return value


# A number written as a string ("230.5", "-1e3"): ASCII digits only, spaces/tabs around it; no "nan"/"inf", no
# thousands separators, no hex. (`\s` and `\d` would admit characters float() refuses, e.g. U+001C.)
NUMERIC_TEXT = re.compile(r"[ \t]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*")


def numeric_text(value: str, key: str) -> float:
    """A finite float from a numeric string; raises Reject otherwise."""
    if len(value) > 400 or not NUMERIC_TEXT.fullmatch(value):
        raise Reject("wrong_type", f"{key} must be a number, got str {value[:40]!r}")
    result = float(value)
    if not math.isfinite(result):
        raise Reject("not_finite", f"{key} is {value[:40]!r}")
    return result


_NUMERIC_START = frozenset("0123456789+-. \t")


def is_numeric_text(value: str) -> bool:
    """Whether a string is a number written as text (what `numeric_text` accepts, finite or not). Most strings
    devices send are words: the first character rules them out before the regular expression runs."""
    return value[:1] in _NUMERIC_START and len(value) <= 400 and NUMERIC_TEXT.fullmatch(value) is not None


def object_fields(obj: object, where: str, accept_text: bool, skipped: list[tuple[str, str]],
                  drop: frozenset[str] = frozenset()) -> dict[str, float]:
    """The numbers of a nested object as fields (names joined with `_`), for formats that take every number of
    an object (tasmota's sensor objects, Shelly components). Numbers sent as text are converted with
    `accept_text` (the rule's `numeric_strings`), else appended to `skipped` as (path, text); other strings are
    status (`Id`, `TotalStartTime`, `source`) and not measurements. Paths in `drop` are left out (Shelly's `id`)."""
    fields: dict[str, float] = {}
    for path, name, value in numeric_leaves(obj, strings=True):
        if path in drop:
            continue
        if type(value) is str:
            if not is_numeric_text(value):
                continue
            if accept_text:
                fields[name] = numeric_text(value, f"{where}.{path}" if where else path)
            else:
                skipped.append((f"{where}.{path}" if where else path, value[:40]))
        else:
            fields[name] = number(value, f"{where}.{path}" if where else path)
    return fields


def decimal_ns(value: float, factor: int) -> int:
    """Nanoseconds from an epoch sent as a decimal (`1709294330.25` s): the decimal times the factor, rounded
    once. `round(value * factor)` multiplies the binary double and gave …249999872 ns."""
    return int((Decimal(repr(value)) * factor).to_integral_value(ROUND_HALF_EVEN))


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
        for limit, factor in ((1e11, 10**9), (1e14, 10**6), (1e17, 10**3)):
            if value < limit:
                return value * factor if type(value) is int else decimal_ns(value, factor)
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            t = datetime.fromisoformat(text)
            if t.tzinfo is None:
                t = t.replace(tzinfo=ZoneInfo(tz))
            return aware_ns(t)
        except (ValueError, OverflowError, OSError):
            raise Reject("bad_timestamp", f"timestamp {value[:40]!r} is not ISO 8601") from None
    raise Reject("bad_timestamp", f"timestamp of type {type(value).__name__}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def aware_ns(t: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime, exact (a float timestamp loses the microseconds)."""
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000


def static_tags(rule, named: dict[str, str]) -> dict[str, str]:
    """Tags from the topic's named levels (not `measurement`/`field`) and the rule's static `tags`."""
    tags = {k: v for k, v in named.items() if k not in ("measurement", "field") and v}
    tags.update(rule.tags)
    return tags


def is_number(value: object) -> bool:
    """A JSON number (int or float, not bool)."""
    t = type(value)
    return t is float or t is int


def numeric_leaves(obj: object, sep: str = "_", depth: int = 0, path: str = "", name: str = "",
                   strings: bool = False) -> Iterator[tuple[str, str, object]]:
    """(dotted path, flattened name, value) of every number in nested objects and arrays.

    Paths read like the rule syntax (`aenergy.total`, `Power[0]`); names join the keys with `sep`
    (`aenergy_total`, `Power_0`). Strings are yielded only with `strings`, and only those that may be numbers
    sent as text (their first character could start one: words such as "ON" are not yielded). Objects nested
    more than MAX_DEPTH deep are refused (`too_deep`)."""
    if depth > MAX_DEPTH:
        raise Reject("too_deep", f"objects nested more than {MAX_DEPTH} levels deep")
    if type(obj) is dict:
        for key, value in obj.items():
            p = f"{path}.{key}" if path else key
            n = f"{name}{sep}{key}" if name else key
            t = type(value)
            if t is float or t is int or (strings and t is str and value[:1] in _NUMERIC_START):
                yield p, n, value
            elif t is dict or t is list:
                yield from numeric_leaves(value, sep, depth + 1, p, n, strings)
    elif type(obj) is list:
        for i, value in enumerate(obj):
            p = f"{path}[{i}]"
            n = f"{name}{sep}{i}" if name else str(i)
            t = type(value)
            if t is float or t is int or (strings and t is str and value[:1] in _NUMERIC_START):
                yield p, n, value
            elif t is dict or t is list:
                yield from numeric_leaves(value, sep, depth + 1, p, n, strings)


EPOCH_FACTORS = {"epoch_s": 10**9, "epoch_ms": 10**6, "epoch_us": 10**3, "epoch_ns": 1}
TIME_FORMATS = ("auto", "iso", *EPOCH_FACTORS)


def time_parser(fmt: str, tz: str) -> Callable[[object], int]:
    """A function value -> ns for `time_format` (`auto`, `iso`, `epoch_s|ms|us|ns` or a strptime pattern with %).

    Raises ValueError for a format that is none of these (checked at config load)."""
    zone = ZoneInfo(tz)
    if fmt == "auto":
        return lambda value: parse_time(value, tz)
    if fmt == "iso":
        def iso(value: object) -> int:
            if not isinstance(value, str):
                raise Reject("bad_timestamp", f"timestamp must be an ISO 8601 string, got {type(value).__name__}")
            return parse_time(value, tz)
        return iso
    if fmt in EPOCH_FACTORS:
        factor = EPOCH_FACTORS[fmt]

        def epoch(value: object) -> int:
            if isinstance(value, str):
                try:
                    value = numeric_text(value, "timestamp")
                except Reject as rej:
                    raise Reject("bad_timestamp", rej.detail) from None
            elif not is_number(value):
                raise Reject("bad_timestamp", f"timestamp must be a number ({fmt}), got {type(value).__name__}")
            if type(value) is float and not math.isfinite(value):
                raise Reject("bad_timestamp", f"timestamp {value} ({fmt})")
            try:
                ns = value * factor if type(value) is int else decimal_ns(value, factor)
            except OverflowError:
                raise Reject("bad_timestamp", f"timestamp {str(value)[:40]} ({fmt}) is out of range") from None
            if not 0 < ns <= MAX_TIME_NS:
                raise Reject("bad_timestamp", f"timestamp {str(value)[:40]} ({fmt}) is not a time InfluxDB can store")
            return ns
        return epoch
    if "%" not in fmt:
        raise ValueError(f"time_format {fmt!r}: one of {', '.join(TIME_FORMATS)} or a strptime pattern with %")

    def pattern(value: object) -> int:
        if not isinstance(value, str):
            raise Reject("bad_timestamp", f"timestamp must be a string ({fmt}), got {type(value).__name__}")
        try:
            t = datetime.strptime(value.strip(), fmt)
            if t.tzinfo is None:
                t = t.replace(tzinfo=zone)
            return aware_ns(t)
        except (ValueError, OverflowError, OSError):
            raise Reject("bad_timestamp", f"timestamp {value[:40]!r} does not match {fmt!r}") from None
    return pattern
