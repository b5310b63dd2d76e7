"""Declarative mapping rules: an MQTT topic pattern with named levels plus a payload format → points.

Pattern syntax (like Telegraf's topic_parsing, written inline): `hack/+device/+channel` matches one level per
`+`, and a name after `+` turns that level into a tag (or, for the names `measurement` and `field`, into the
point's measurement or field name). `#` (optionally `#name`) matches the rest of the topic. A named level may
list the values it takes: `evcc/site/+field=gridPower|pvPower` matches only those two topics, and the agent
subscribes to exactly those (a broker carries much that no rule should see: names, versions, settings).
`#field=Dc/0/Power|Soc` does the same for the rest of the topic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.config import AgentConfig, ConfigError
from edge_agent.ingest.formats import (
    FORMAT_KEYS,
    FORMATS,
    BoundParser,
    FormatConfigError,
    Ignored,
    Points,
    Reject,
    compile_format,
)
from edge_agent.ingest.formats.units import Scaler, decimal_fraction, exact_factor, scaler
from edge_agent.ingest.ruleconfig import RuleConfig, parse_rules
from shared.points import InvalidPoint, Point, name_problem
from shared.schema import RESERVED_MEASUREMENTS

MAX_SUBSCRIPTIONS_PER_RULE = 256


class RuleError(ConfigError):
    """A rule that cannot be compiled; the message names `rules[i]` and the key."""


@dataclass(frozen=True)
class TopicPattern:
    text: str
    levels: tuple[str, ...]  # as written, with the value lists cut off
    choices: tuple[frozenset[str] | None, ...]  # per level: the values a `+name=a|b` level accepts

    @classmethod
    def parse(cls, text: str) -> TopicPattern:
        if not text or "\x00" in text:
            raise RuleError(f"empty or invalid topic pattern {text!r}")
        levels, choices = [], []
        for level in text.split("/") if "=" not in text else _split_levels(text):
            head, eq, values = level.partition("=")
            if eq and head[:1] in ("+", "#"):
                alts = values.split("|")
                if any(not a or "+" in a or "#" in a or (head[0] == "+" and "/" in a) for a in alts):
                    raise RuleError(f"topic pattern {text!r}: {level!r} needs non-empty values without wildcards"
                                    + (" or '/'" if head[0] == "+" else ""))
                levels.append(head)
                choices.append(frozenset(alts))
            else:
                levels.append(level)
                choices.append(None)
        names = [lv[1:] for lv in levels if lv[:1] in ("+", "#") and lv[1:]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuleError(f"topic pattern {text!r}: level name(s) {', '.join(duplicates)} used twice")
        for i, level in enumerate(levels):
            if level.startswith("#") and i != len(levels) - 1:
                raise RuleError(f"topic pattern {text!r}: '#' must be the last level")
            if ("+" in level and not level.startswith("+")) or ("#" in level and not level.startswith("#")):
                raise RuleError(f"topic pattern {text!r}: a wildcard must start its level")
        n = 1
        for c in choices:
            n *= len(c) if c else 1
        if n > MAX_SUBSCRIPTIONS_PER_RULE:
            raise RuleError(f"topic pattern {text!r} expands to {n} subscriptions, at most "
                            f"{MAX_SUBSCRIPTIONS_PER_RULE}")
        return cls(text, tuple(levels), tuple(choices))

    @property
    def subscription(self) -> str:
        """The MQTT filter of the pattern without its value lists: named levels become plain wildcards."""
        return "/".join("+" if lv.startswith("+") else "#" if lv.startswith("#") else lv for lv in self.levels)

    @property
    def subscriptions(self) -> list[str]:
        """The MQTT filters that carry exactly what the pattern matches (value lists expanded)."""
        per_level = [sorted(c) if c else ["+" if lv.startswith("+") else "#" if lv.startswith("#") else lv]
                     for lv, c in zip(self.levels, self.choices, strict=True)]
        return ["/".join(combo) for combo in itertools.product(*per_level)]

    def match(self, topic: str) -> dict[str, str] | None:
        """Named levels of `topic` if it matches, else None."""
        parts = topic.split("/")
        if topic.startswith("$") and self.levels[0][:1] in ("+", "#"):
            return None  # MQTT: wildcards at the first level do not match $SYS-style topics
        named: dict[str, str] = {}
        for i, level in enumerate(self.levels):
            if level.startswith("#"):
                rest = "/".join(parts[i:])
                if self.choices[i] is not None and rest not in self.choices[i]:
                    return None
                if level[1:]:
                    named[level[1:]] = rest
                return named
            if i >= len(parts):
                return None
            if level.startswith("+"):
                if self.choices[i] is not None and parts[i] not in self.choices[i]:
                    return None
                if level[1:]:
                    named[level[1:]] = parts[i]
            elif level != parts[i]:
                return None
        return named if len(parts) == len(self.levels) else None


def _split_levels(text: str) -> list[str]:
    """Levels of a pattern with value lists: the values of a final `#name=a/b|c` keep their slashes."""
    levels = text.split("/")
    for i, level in enumerate(levels):
        if level.startswith("#") and "=" in level:
            return [*levels[:i], "/".join(levels[i:])]
    return levels


@dataclass(frozen=True)
class Rule:
    config: RuleConfig
    pattern: TopicPattern
    parse: BoundParser
    scale: Scaler | None = None  # every numeric field, exact in decimal (formats/units.py); None: factor 1
    convert: tuple[tuple[str, Scaler | None], ...] = ()  # field -> `scale` times its `convert` factor, exact

    @property
    def name(self) -> str:
        return self.config.name


def _convert(cfg: RuleConfig, where: str) -> tuple[tuple[str, Scaler | None], ...]:
    """Per field: one exact scaling by `scale` × the field's factor (one rounding, not two)."""
    if not isinstance(cfg.convert, dict):
        raise RuleError(f"{where}.convert must be a table of field -> 'FROM->TO' or a factor")
    out = []
    scale = decimal_fraction(cfg.scale)
    for field, spec in cfg.convert.items():
        if problem := name_problem(field, "field name"):
            raise RuleError(f"{where}.convert: {problem}")
        try:
            out.append((field, scaler(scale * exact_factor(spec, f"{where}.convert.{field}"))))
        except ValueError as exc:
            raise RuleError(str(exc)) from None
    return tuple(out)


def compile_rule(cfg: RuleConfig, where: str) -> Rule:
    """One rule, compiled: its pattern, its format's settings and its conversions; errors name the key."""
    fmt = FORMATS.get(cfg.format)
    if fmt is None:
        raise RuleError(f"{where}: unknown format {cfg.format!r}; one of {', '.join(FORMATS)}")
    defaults = RuleConfig(topic="", format="")
    for key in sorted(FORMAT_KEYS - fmt.keys):
        if getattr(cfg, key) != getattr(defaults, key):
            owners = sorted(name for name, f in FORMATS.items() if key in f.keys)
            names = ", ".join(owners[:-1]) + " or " + owners[-1] if len(owners) > 1 else owners[0]
            raise RuleError(f"{where}.{key}: only for format {names} (this rule's is {cfg.format})")
    try:
        pattern = TopicPattern.parse(cfg.topic)
    except RuleError as exc:
        raise RuleError(f"{where}.topic: {exc}") from None
    if cfg.format == "number" and not (cfg.field or "field" in {lv[1:] for lv in pattern.levels}):
        raise RuleError(f"{where}: format '{cfg.format}' needs `field` or a `+field` topic level")
    try:
        parse = compile_format(cfg)
    except FormatConfigError as exc:
        raise RuleError(f"{where}.{exc}") from None
    return Rule(cfg, pattern, parse, scaler(decimal_fraction(cfg.scale)), _convert(cfg, where))


def compile_rules(configs: Sequence[RuleConfig]) -> list[Rule]:
    return [compile_rule(cfg, f"rules[{i}]") for i, cfg in enumerate(configs)]


def load_rules(cfg: AgentConfig) -> list[Rule]:
    """The configuration's `[[rules]]`, read, checked and compiled once; a ConfigError names the file and the key."""
    try:
        return compile_rules(parse_rules(cfg))
    except RuleError as exc:
        raise ConfigError(f"{cfg.path}: {exc}") from None


class Router:
    """Finds the first rule whose pattern matches a topic and turns the payload into points."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = list(rules)

    @property
    def subscriptions(self) -> list[str]:
        return sorted({s for r in self.rules for s in r.pattern.subscriptions})

    def match(self, topic: str) -> tuple[Rule, dict[str, str]] | None:
        """The first rule whose pattern matches `topic`, with the topic's named levels."""
        for rule in self.rules:
            named = rule.pattern.match(topic)
            if named is not None:
                return rule, named
        return None

    def route(self, topic: str, payload: bytes, received_ns: int) -> tuple[Rule, list[Point]]:
        """Points for one message; raises Reject or Ignored (with the rule when one matched). The points may be
        `Points` with `skipped` numbers sent as text."""
        found = self.match(topic)
        if found is None:
            raise Reject("unknown_topic", f"no rule matches topic {topic!r}")
        rule, named = found
        try:
            points = rule.parse(named, payload, received_ns)
        except (Reject, Ignored) as exc:
            exc.rule = rule.name
            raise
        if rule.scale is not None or rule.convert:
            skipped = getattr(points, "skipped", ())
            points = Points(_scaled(p, rule) for p in points).with_skipped(skipped)
        for p in points:
            try:
                p.validate()
            except InvalidPoint as exc:
                raise Reject(exc.reason, str(exc), rule.name) from None
            if p.measurement in RESERVED_MEASUREMENTS and p.measurement not in rule.config.allow_reserved:
                raise Reject("reserved_measurement", f"measurement {p.measurement!r} is written by the agent "
                                                     "itself (a rule may allow it with allow_reserved)",
                             rule.name)
        return rule, points


def _scaled(p: Point, rule: Rule) -> Point:
    """`scale` times the field's `convert` factor, on every numeric field, exact in decimal (formats/units.py)."""
    scale = rule.scale
    fields = {k: scale(v) if type(v) is float else v for k, v in p.fields.items()} if scale else dict(p.fields)
    for name, scaled in rule.convert:
        value = p.fields.get(name)
        if type(value) is float:
            fields[name] = scaled(value) if scaled else value
    return Point(p.measurement, p.tags, fields, p.time_ns)
