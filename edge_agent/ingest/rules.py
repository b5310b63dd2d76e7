"""Declarative mapping rules: an MQTT topic pattern with named levels plus a payload format → points.

Pattern syntax (like Telegraf's topic_parsing, written inline): `hack/+device/+channel` matches one level per
`+`, and a name after `+` turns that level into a tag (or, for the names `measurement` and `field`, into the
point's measurement or field name). `#` (optionally `#name`) matches the rest of the topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.config import RuleConfig
from edge_agent.ingest.formats import PARSERS, Parser, Reject
from shared.points import InvalidPoint, Point
from shared.schema import RESERVED_MEASUREMENTS


class RuleError(ValueError):
    pass


@dataclass(frozen=True)
class TopicPattern:
    text: str
    levels: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> TopicPattern:
        if not text or "\x00" in text:
            raise RuleError(f"empty or invalid topic pattern {text!r}")
        levels = tuple(text.split("/"))
        names = [lv[1:] for lv in levels if lv[:1] in ("+", "#") and lv[1:]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuleError(f"topic pattern {text!r}: level name(s) {', '.join(duplicates)} used twice")
        for i, level in enumerate(levels):
            if level.startswith("#") and i != len(levels) - 1:
                raise RuleError(f"topic pattern {text!r}: '#' must be the last level")
            if ("+" in level and not level.startswith("+")) or ("#" in level and not level.startswith("#")):
                raise RuleError(f"topic pattern {text!r}: a wildcard must start its level")
        return cls(text, levels)

    @property
    def subscription(self) -> str:
        """The MQTT subscription filter: named levels become plain wildcards."""
        return "/".join("+" if lv.startswith("+") else "#" if lv.startswith("#") else lv for lv in self.levels)

    def match(self, topic: str) -> dict[str, str] | None:
        """Named levels of `topic` if it matches, else None."""
        parts = topic.split("/")
        if topic.startswith("$") and self.levels[0][:1] in ("+", "#"):
            return None  # MQTT: wildcards at the first level do not match $SYS-style topics
        named: dict[str, str] = {}
        for i, level in enumerate(self.levels):
            if level.startswith("#"):
                if level[1:]:
                    named[level[1:]] = "/".join(parts[i:])
                return named
            if i >= len(parts):
                return None
            if level.startswith("+"):
                if level[1:]:
                    named[level[1:]] = parts[i]
            elif level != parts[i]:
                return None
        return named if len(parts) == len(self.levels) else None


@dataclass(frozen=True)
class Rule:
    config: RuleConfig
    pattern: TopicPattern
    parser: Parser

    @property
    def name(self) -> str:
        return self.config.name


def compile_rules(configs: Sequence[RuleConfig]) -> list[Rule]:
    rules = []
    for i, cfg in enumerate(configs):
        parser = PARSERS.get(cfg.format)
        if parser is None:
            raise RuleError(f"rules[{i}]: unknown format {cfg.format!r}")
        try:
            pattern = TopicPattern.parse(cfg.topic)
        except RuleError as exc:
            raise RuleError(f"rules[{i}]: {exc}") from None
        if cfg.format == "number" and not (cfg.field or "field" in {lv[1:] for lv in pattern.levels}):
            raise RuleError(f"rules[{i}]: format 'number' needs `field` or a `+field` topic level")
        rules.append(Rule(cfg, pattern, parser))
    return rules


class Router:
    """Finds the first rule whose pattern matches a topic and turns the payload into points."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = list(rules)

    @property
    def subscriptions(self) -> list[str]:
        return sorted({r.pattern.subscription for r in self.rules})

    def route(self, topic: str, payload: bytes, received_ns: int) -> tuple[Rule, list[Point]]:
        """Points for one message; raises Reject (with the rule when one matched)."""
        for rule in self.rules:
            named = rule.pattern.match(topic)
            if named is None:
                continue
            try:
                points = rule.parser(rule.config, named, payload, received_ns)
            except Reject as rej:
                rej.rule = rule.name
                raise
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
        raise Reject("unknown_topic", f"no rule matches topic {topic!r}")
