"""The `[[rules]]` entries (docs/edge-agent.md "Rules"): what a rule may say and the checks that need no format.

Ingest owns its rules, as Telegraf's topic parser owns its settings: this module reads them from the agent's
configuration, edge_agent/ingest/rules.py compiles them (the format names come from the formats registry,
edge_agent/ingest/formats/__init__.py), once, when ingest is built or `edge-agent check` runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_agent.config import AgentConfig, ConfigError, build_dataclass
from shared.points import name_problem
from shared.schema import RESERVED_MEASUREMENTS


@dataclass
class RuleConfig:
    """One `[[rules]]` entry (docs/edge-agent.md "Rules"); format-specific keys are checked by the format."""

    topic: str
    format: str
    name: str = ""
    measurement: str | None = None
    field: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    timezone: str = "UTC"
    scale: float = 1.0
    convert: dict[str, Any] = dataclasses.field(default_factory=dict)  # field -> "Wh->kWh" or a factor
    allow_reserved: list[str] = dataclasses.field(default_factory=list)  # e.g. ["forecast"]: see schema.py
    # tasmota
    sensor_as: str = "tag"  # the sensor object's name: tag `sensor` or the measurement
    # shelly_gen2: the components stored ("em:0", or a type: "switch"); default: all but the device's housekeeping
    components: list[str] = dataclasses.field(default_factory=list)
    # csv, key_value (edge_agent/ingest/formats/text.py)
    columns: list[str] = dataclasses.field(default_factory=list)  # csv: the names of the values in order
    delimiter: str = ","  # between values (csv) or pairs (key_value)
    assign: str = "="  # key_value: between a key and its value
    # json (edge_agent/ingest/formats/generic.py)
    fields: list = dataclasses.field(default_factory=list)  # paths or {path, name, optional, map, convert}
    include: list[str] = dataclasses.field(default_factory=list)  # globs over the numeric leaves' paths
    exclude: list[str] = dataclasses.field(default_factory=list)
    separator: str = "_"  # joins nested keys into field names
    numeric_strings: bool = False  # json, tasmota: accept numbers sent as strings ("230.5")
    measurement_path: str | None = None
    tag_paths: dict[str, str] = dataclasses.field(default_factory=dict)  # tag -> path
    time_path: str | None = None
    time_format: str = "auto"  # auto | iso | epoch_s | epoch_ms | epoch_us | epoch_ns | a strptime pattern


def check_rule(rule: RuleConfig, where: str) -> None:
    """Names a rule writes must be storable, only measurements the agent writes may be reserved, and settings
    used on every message (timezone, scale) must work: a bad one would reject every message at run time."""
    try:
        ZoneInfo(rule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}.timezone {rule.timezone!r} is not a known IANA timezone "
                          "(e.g. Europe/Berlin, UTC)") from None
    if not math.isfinite(rule.scale) or rule.scale == 0:
        raise ConfigError(f"{where}.scale must be a finite non-zero number")
    if rule.measurement is not None:
        problem = name_problem(rule.measurement, "measurement")
        if problem or rule.measurement.startswith("#"):
            raise ConfigError(f"{where}.measurement: {problem or 'must not start with #'}")
    if rule.field is not None and (problem := name_problem(rule.field, "field")):
        raise ConfigError(f"{where}.field: {problem}")
    for key, value in rule.tags.items():
        problem = name_problem(key, "tag key") or name_problem(value, f"tag {key!r}")
        if problem:
            raise ConfigError(f"{where}.tags: {problem}")
    unknown = sorted(set(rule.allow_reserved) - RESERVED_MEASUREMENTS)
    if unknown:
        raise ConfigError(f"{where}.allow_reserved: {', '.join(unknown)} not reserved; reserved: "
                          f"{', '.join(sorted(RESERVED_MEASUREMENTS))}")


def parse_rules(cfg: AgentConfig) -> list[RuleConfig]:
    """The configuration's rules, each checked (errors name the file and `rules[i]`); at least one."""
    where = str(cfg.path)
    doc = cfg.raw.get("rules") or []
    if not isinstance(doc, list) or not doc:
        raise ConfigError(f"{where}: at least one [[rules]] entry is needed")
    rules = []
    for i, entry in enumerate(doc):
        rule = build_dataclass(RuleConfig, entry, f"{where}: rules[{i}]")
        rule.name = rule.name or f"{rule.format}:{rule.topic}"
        check_rule(rule, f"{where}: rules[{i}]")
        rules.append(rule)
    return rules
