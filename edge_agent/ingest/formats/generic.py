"""`json`: any JSON object, mapped declaratively (in the spirit of Telegraf's json_v2 and Home Assistant's value
paths, without templates). Everything is compiled when the configuration is loaded; a message costs one decode
and a walk over what the rule selects.

Rule keys (docs/edge-agent.md, docs/devices.md):
- `fields`: values selected by path (paths.py), each a string or a table `{path, name, optional, map, convert}`.
  A value selected this way must be a number (or a numeric string with `numeric_strings`, or a string/boolean
  listed in `map`), else the message is rejected (`wrong_type`); a path that is missing (or null) rejects it
  (`missing_field`) unless `optional`. Names default to the path flattened with `separator` (`aenergy.total` →
  `aenergy_total`); the only field of a rule without `name` is named by the rule's `field` or the topic's
  `+field` level when there is one (Victron: `N/…/#field` with `{"value": …}`).
- `include`/`exclude`: globs over the dotted paths of all numeric leaves (numeric strings too with
  `numeric_strings`); other leaves are ignored. Without `fields` and `include`, every numeric leaf is taken.
- `measurement_path` (else `measurement`, else the topic's `+measurement`, else `mqtt`), `tag_paths`
  (`{tag = "path"}`: strings and integers, missing ones left out), `time_path` with `time_format` and `timezone`
  (missing: the receive time).
- a field's `sign`: `{ path = "energy_flow_a", negative = ["producing"], positive = ["consuming"] }` — devices
  that send a magnitude and a direction (Tuya bidirectional clamps in Zigbee2MQTT) become a signed value:
  |value| when the direction is positive, -|value| when negative; a direction in neither list is `wrong_type`,
  a missing one `missing_field` (or the field is left out when `optional`).

The text formats (`csv`, `key_value`: text.py) turn their payload into a flat object of strings and use this
mapping unchanged, with every value read as a number written as text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.ingest.formats.base import (
    MAX_DEPTH,
    FormatConfigError,
    Points,
    Reject,
    decode_json,
    is_numeric_text,
    number,
    numeric_leaves,
    numeric_text,
    static_tags,
    time_parser,
)
from edge_agent.ingest.formats.paths import MISSING, Path, PathError, compile_globs, compile_path
from edge_agent.ingest.formats.units import Scaler, exact_factor, scaler
from shared.points import Point, name_problem

FIELD_KEYS = ("path", "name", "optional", "map", "convert", "sign")
SIGN_KEYS = ("path", "negative", "positive")


@dataclass(frozen=True)
class Sign:
    """Where a field's direction is and which values of it mean negative (and positive)."""

    path: Path
    negative: frozenset[str]
    positive: frozenset[str] | None  # None: whatever is not negative

    def apply(self, doc: object, value: float, where: str) -> float | None:
        """`value` signed by the direction in `doc`; None when the direction is missing."""
        d = self.path.get(doc)
        if d is MISSING or d is None:
            return None
        t = type(d)
        text = ("true" if d else "false") if t is bool else d if t is str else str(d) if t is int else None
        if text in self.negative:
            return -abs(value)
        if text is not None and (self.positive is None or text in self.positive):
            return abs(value)
        allowed = sorted(self.negative | (self.positive or frozenset()))
        raise Reject("wrong_type", f"{self.path.text} (the sign of {where}) is {str(d)[:40]!r}, not one of "
                                   f"{', '.join(allowed)[:80]}")


@dataclass(frozen=True)
class FieldSpec:
    path: Path
    name: str | None  # None: named by the matched path (or, as the only field, by `field`/`+field`)
    optional: bool
    mapping: dict[str, float] | None  # string (or "true"/"false") -> number
    scale: Scaler | None  # the field's `convert`, exact in decimal (units.py); None: none
    sign: Sign | None = None


def _path(text: object, key: str, wildcard_ok: bool = False) -> Path:
    try:
        path = compile_path(text)
    except PathError as exc:
        raise FormatConfigError(key, str(exc)) from None
    if path.wildcard and not wildcard_ok:
        raise FormatConfigError(key, f"path {text!r} must not contain '*' (it selects one value)")
    if len(path.steps) > MAX_DEPTH + 1:
        raise FormatConfigError(key, f"path {text!r} is deeper than {MAX_DEPTH + 1} levels")
    return path


def _field(entry: object, i: int) -> FieldSpec:
    key = f"fields[{i}]"
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict):
        raise FormatConfigError(key, f"must be a path or a table with {', '.join(FIELD_KEYS)}")
    unknown = sorted(set(entry) - set(FIELD_KEYS))
    if unknown:
        raise FormatConfigError(key, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(FIELD_KEYS)}")
    if "path" not in entry:
        raise FormatConfigError(key, "needs `path`")
    path = _path(entry["path"], f"{key}.path", wildcard_ok=True)
    name = entry.get("name")
    if name is not None:
        if path.wildcard:
            raise FormatConfigError(f"{key}.name", "a path with '*' selects several values: they are named by "
                                                   "their paths")
        if problem := name_problem(name, "field name"):
            raise FormatConfigError(f"{key}.name", problem)
    optional = entry.get("optional", False)
    if not isinstance(optional, bool):
        raise FormatConfigError(f"{key}.optional", f"expected true or false, got {optional!r}")
    mapping = entry.get("map")
    if mapping is not None:
        if not isinstance(mapping, dict) or not mapping or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in mapping.values()):
            raise FormatConfigError(f"{key}.map", "must be a table of text -> number, e.g. { ON = 1, OFF = 0 }")
        mapping = {str(k): float(v) for k, v in mapping.items()}
    scale = None
    if "convert" in entry:
        try:
            scale = scaler(exact_factor(entry["convert"], f"{key}.convert"))
        except ValueError as exc:
            raise FormatConfigError(f"{key}.convert", str(exc).split(": ", 1)[-1]) from None
    sign = _sign(entry["sign"], f"{key}.sign", path) if "sign" in entry else None
    return FieldSpec(path, name, optional, mapping, scale, sign)


def _sign(entry: object, key: str, path: Path) -> Sign:
    if not isinstance(entry, dict):
        raise FormatConfigError(key, "must be a table { path = \"…\", negative = [\"…\"], positive = [\"…\"] }")
    unknown = sorted(set(entry) - set(SIGN_KEYS))
    if unknown:
        raise FormatConfigError(key, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(SIGN_KEYS)}")
    if path.wildcard:
        raise FormatConfigError(key, f"path {path.text!r} selects several values; a sign applies to one")
    if "path" not in entry or "negative" not in entry:
        raise FormatConfigError(key, "needs `path` (where the direction is) and `negative` (the values that "
                                     "mean negative)")
    lists = {}
    for k in ("negative", "positive"):
        if k not in entry:
            continue
        v = entry[k]
        if isinstance(v, str | int | bool):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str | int | bool) for x in v):
            raise FormatConfigError(f"{key}.{k}", "must be a non-empty list of texts (or integers, true/false)")
        lists[k] = frozenset(("true" if x else "false") if isinstance(x, bool) else str(x) for x in v)
    if "positive" in lists and lists["positive"] & lists["negative"]:
        raise FormatConfigError(f"{key}.positive", f"{', '.join(sorted(lists['positive'] & lists['negative']))} "
                                                   "also listed as negative")
    return Sign(_path(entry["path"], f"{key}.path"), lists["negative"], lists.get("positive"))


class JsonRule:
    """A compiled `json` rule; calling it turns one payload into one point.

    `decode` turns the payload into the document the paths read (JSON by default; the text formats give a flat
    object of strings, `text=True`: every value is a number written as text)."""

    def __init__(self, rule, decode: Callable[[bytes], object] = decode_json, text: bool = False):
        self.rule = rule
        self.decode = decode
        if not isinstance(rule.separator, str) or name_problem(rule.separator or "x", "separator"):
            raise FormatConfigError("separator", f"{rule.separator!r} cannot be part of a field name")
        self.sep = rule.separator
        if not isinstance(rule.fields, list):
            raise FormatConfigError("fields", "must be a list of paths or tables")
        self.fields = [_field(e, i) for i, e in enumerate(rule.fields)]
        names = [f.name or _flat(f.path, self.sep) for f in self.fields if not f.path.wildcard]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FormatConfigError("fields", f"field name(s) {', '.join(duplicates)} selected twice")
        self.include, self.exclude = (self._globs(rule.include, "include"), self._globs(rule.exclude, "exclude"))
        if self.exclude is not None and self.include is None and self.fields:
            raise FormatConfigError("exclude", "applies to the leaves `include` selects: add include = [\"*\"] "
                                               "(or remove exclude)")
        if self.include is None and not self.fields:
            self.include = compile_globs(["*"], "include")  # nothing selected: every numeric leaf
        self.explicit = {f.path.dotted for f in self.fields if not f.path.wildcard}
        # The only field without a name takes the rule's `field` or the topic's +field level (None: at runtime).
        single = len(self.fields) == 1 and self.include is None and self.fields[0].name is None
        self.names = [None if f.path.wildcard or single else f.name or _flat(f.path, self.sep) for f in self.fields]
        if not isinstance(rule.numeric_strings, bool):
            raise FormatConfigError("numeric_strings", "expected true or false")
        self.strings = rule.numeric_strings or text
        self.measurement_path = _path(rule.measurement_path, "measurement_path") if rule.measurement_path \
            else None
        if not isinstance(rule.tag_paths, dict):
            raise FormatConfigError("tag_paths", "must be a table of tag -> path")
        self.tag_paths = []
        for tag, text in rule.tag_paths.items():
            if problem := name_problem(tag, "tag key") or (tag == "time" and "'time' cannot be a tag key"):
                raise FormatConfigError(f"tag_paths.{tag}", problem)
            self.tag_paths.append((tag, _path(text, f"tag_paths.{tag}")))
        self.time_path = _path(rule.time_path, "time_path") if rule.time_path else None
        # Values the rule reads as measurement, tag or time are not fields as well.
        self.explicit |= {p.dotted for p in (self.measurement_path, self.time_path, *(p for _, p in self.tag_paths))
                          if p is not None}
        try:
            self.parse_time = time_parser(rule.time_format, rule.timezone)
        except ValueError as exc:
            raise FormatConfigError("time_format", str(exc)) from None

    @staticmethod
    def _globs(patterns: object, key: str):
        try:
            return compile_globs(patterns, key)
        except PathError as exc:
            raise FormatConfigError(key, str(exc).split(": ", 1)[-1]) from None

    # -- per message ----------------------------------------------------------------------------------------
    def _value(self, spec: FieldSpec, value: object, where: str) -> float:
        """The number a selected value stands for."""
        t = type(value)
        if t is float and value - value == 0.0:  # finite (inf - inf and nan - nan are nan)
            result = value
        elif t is float or t is int:
            result = number(value, where)
        elif spec.mapping is not None and (t is str or t is bool):
            text = ("true" if value else "false") if t is bool else value
            if text not in spec.mapping:
                raise Reject("wrong_type", f"{where} is {str(value)[:40]!r}, not one of the rule's map: "
                                           f"{', '.join(spec.mapping)[:80]}")
            result = spec.mapping[text]
        elif t is str and self.strings:
            result = numeric_text(value, where)
        elif t is str and is_numeric_text(value):
            raise Reject("wrong_type", f"{where} is a number sent as text ({value[:40]!r}): set numeric_strings "
                                       "= true in the rule")
        else:
            raise Reject("wrong_type", f"{where} must be a number, got {t.__name__} {str(value)[:40]!r}")
        return spec.scale(result) if spec.scale is not None else result

    def __call__(self, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
        doc = self.decode(payload)
        fields: dict[str, float] = {}
        skipped: list[tuple[str, str]] = []
        for spec, name in zip(self.fields, self.names, strict=True):
            if spec.path.wildcard:
                found = False
                for concrete, value in spec.path.find(doc):
                    if value is not None:
                        found = True
                        fields[spec.path.name(concrete, self.sep)] = self._value(spec, value, spec.path.text)
                if not found and not spec.optional:
                    raise Reject("missing_field", f"nothing matches {spec.path.text}")
                continue
            value = spec.path.get(doc)
            if value is MISSING or value is None:
                if spec.optional:
                    continue
                raise Reject("missing_field", f"{spec.path.text} is {'null' if value is None else 'missing'}")
            if name is None:  # the rule's only field
                name = spec.name or self.rule.field or named.get("field") or _flat(spec.path, self.sep)
            result = self._value(spec, value, spec.path.text)
            if spec.sign is not None:
                result = spec.sign.apply(doc, result, spec.path.text)
                if result is None:
                    if spec.optional:
                        continue
                    raise Reject("missing_field", f"{spec.sign.path.text} (the sign of {spec.path.text}) is missing")
            fields[name] = result
        if self.include is not None:
            inc, exc, explicit, strings = self.include.fullmatch, self.exclude, self.explicit, self.strings
            for path, name, value in numeric_leaves(doc, self.sep, strings=True):
                is_text = type(value) is str
                if is_text and not (strings or is_numeric_text(value)):
                    continue  # a word, not a number: no measurement (checked first, it is the cheaper test)
                if not inc(path) or (exc is not None and exc.fullmatch(path)) or path in explicit \
                        or name in fields:
                    continue
                if not is_text:
                    fields[name] = number(value, path)
                elif strings:
                    try:
                        fields[name] = numeric_text(value, path)
                    except Reject as rej:
                        if rej.reason != "wrong_type":
                            raise
                else:  # a number sent as text, which the rule does not take: say so
                    skipped.append((path, value[:40]))
        if not fields:
            hint = (f" ({', '.join(p for p, _ in skipped[:5])} sent as text: set numeric_strings = true)"
                    if skipped else "")
            raise Reject("missing_field", f"the rule selects no number from this payload{hint}")
        point = Point(self._measurement(doc, named), self._tags(doc, named), fields, self._time(doc, received_ns))
        return Points([point]).with_skipped(skipped)

    def _measurement(self, doc: object, named: dict[str, str]) -> str:
        if self.measurement_path is not None:
            value = self.measurement_path.get(doc)
            if isinstance(value, str) and value:
                return value
            if value is not MISSING and value is not None:
                raise Reject("wrong_type", f"{self.measurement_path.text} (the measurement) must be a string, "
                                           f"got {type(value).__name__}")
            if not (self.rule.measurement or named.get("measurement")):
                raise Reject("missing_field", f"{self.measurement_path.text} (the measurement) is missing")
        return self.rule.measurement or named.get("measurement") or "mqtt"

    def _tags(self, doc: object, named: dict[str, str]) -> dict[str, str]:
        tags = static_tags(self.rule, named)
        for tag, path in self.tag_paths:
            value = path.get(doc)
            if value is MISSING or value is None or value == "":
                continue
            t = type(value)
            if t is str:
                tags[tag] = value
            elif t is int:
                tags[tag] = str(value)
            else:
                raise Reject("wrong_type", f"{path.text} (tag {tag}) must be a string or an integer, got "
                                           f"{t.__name__}")
        return tags

    def _time(self, doc: object, received_ns: int) -> int:
        if self.time_path is None:
            return received_ns
        value = self.time_path.get(doc)
        if value is MISSING or value is None:
            return received_ns
        return self.parse_time(value)


def _flat(path: Path, sep: str) -> str:
    """The field name of a wildcard-free path: its keys and indices joined with `sep`."""
    return path.name(tuple(arg for _, arg in path.steps), sep)


def compile_json(rule) -> JsonRule:
    return JsonRule(rule)
