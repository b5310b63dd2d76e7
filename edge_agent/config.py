"""Agent configuration: TOML or YAML, validated into dataclasses with error messages that name the key.

Sections owned by other components (`flow`, `forecast`, `api`, `models`) stay in `AgentConfig.raw`; each
component parses its own.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.points import name_problem
from shared.schema import RESERVED_MEASUREMENTS
from shared.secrets import read_secret
from shared.storage.base import StorageConfig


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


@dataclass
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "edge-agent"
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str | None = None
    qos: int = 1
    subscribe: list[str] = field(default_factory=list)  # default: the rules' topics
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    read_coalesce_s: float = 0.1  # messages trickling in are read in groups (see edge_agent/runtime/mqtt_client.py)

    def __repr__(self) -> str:
        return (f"MqttConfig(host={self.host!r}, port={self.port}, client_id={self.client_id!r}, "
                f"username={self.username!r}, password={'***' if self.password else None}, tls={self.tls})")


@dataclass
class SpoolConfig:
    dir: str = "spool"
    max_bytes: int = 512 * 1024 * 1024
    warn_ratio: float = 0.8
    segment_bytes: int = 16 * 1024 * 1024
    batch_points: int = 5000
    batch_interval_s: float = 1.0
    drain_quiet_s: float = 0.2  # a batch goes out when nothing was spooled for this long
    # Group commit (docs/pi.md, write budget): received messages are written to the database (or, while it is away
    # or behind, to the spool) and acknowledged in groups: a group closes `commit_interval_s` after its first
    # message or once it holds `commit_max_messages` — below the broker's in-flight window (Mosquitto's
    # max_inflight_messages, 20 by default; the shipped configurations use 1000), else the broker stops sending.
    commit_interval_s: float = 5.0
    commit_max_messages: int = 16
    cursor_interval_s: float = 5.0  # while a backlog drains, the spool's cursor is written at most this often


@dataclass
class IngestConfig:
    max_payload_bytes: int = 64 * 1024
    deadletter: str = "deadletter.jsonl"
    deadletter_max_bytes: int = 64 * 1024 * 1024  # rotate the dead-letter file at this size …
    deadletter_keep: int = 5  # … keeping this many rotated files (what rotation deletes is counted)
    # Messages received but not yet spooled. QoS 1/2 beyond the bound wait (the broker holds them);
    # QoS 0 beyond it are dropped and counted (`dropped_qos0`): at-most-once by definition.
    queue_max_messages: int = 10_000
    queue_max_bytes: int = 32 * 1024 * 1024
    # New series (measurement + tags) a rule may create; beyond it messages are dead-lettered as too_many_series
    # (edge_agent/ingest/series.py). 0: no bound.
    max_series_per_rule: int = 2000


@dataclass
class HealthConfig:
    interval_s: float = 60.0
    log_interval_s: float = 900.0  # the counters in the log (journald) this often; the database gets every point
    host_tag: str = field(default_factory=socket.gethostname)


@dataclass
class LoggingConfig:
    level: str = "INFO"
    file: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass
class PublishConfig:
    """What the agent publishes on MQTT (forecasts, the energy flow, its availability) and Home Assistant
    discovery. Until 0.2 these keys lived in [forecast]; they are still read from there when [publish] is absent."""

    topic_prefix: str = "home-energy"
    node_id: str = "edge"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"

    @property
    def availability_topic(self) -> str:
        return f"{self.topic_prefix}/status"  # edge_agent.publish.hass.availability_topic


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


@dataclass
class AgentConfig:
    path: Path
    state_dir: Path
    mqtt: MqttConfig
    storage: StorageConfig
    spool: SpoolConfig
    ingest: IngestConfig
    health: HealthConfig
    logging: LoggingConfig
    rules: list[RuleConfig]
    raw: dict[str, Any]
    publish: PublishConfig = field(default_factory=PublishConfig)

    def resolve(self, path: str | Path) -> Path:
        """A path from the config: absolute as given, else relative to state_dir."""
        p = Path(path)
        return p if p.is_absolute() else self.state_dir / p

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: [{name}] must be a table/mapping")
        return value


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text) or {}
        else:
            doc = tomllib.loads(text)
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'TOML'}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a table/mapping")
    return doc


def build_dataclass(cls, data: Any, where: str):
    """Fill dataclass `cls` from a mapping, rejecting unknown keys and wrong types with the key's name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table/mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        expected = known[name].type if isinstance(known[name].type, str) else str(known[name].type)
        if value is not None:
            ok = True
            if expected.startswith("int"):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif expected.startswith("float"):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif expected.startswith("bool"):
                ok = isinstance(value, bool)
            elif expected.startswith("str"):
                ok = isinstance(value, str)
            elif expected.startswith("list"):
                ok = isinstance(value, list)
            elif expected.startswith("dict"):
                ok = isinstance(value, dict)
            if not ok:
                raise ConfigError(f"{where}.{name}: expected {expected.split(' ')[0]}, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _secret(section: dict, key: str, where: str) -> str | None:
    """`key`, `key_file` or `key_env`: the secret's value, read from a file or the environment."""
    file, env = section.pop(f"{key}_file", None), section.pop(f"{key}_env", None)
    try:
        return read_secret(section.pop(key, None), file, env)
    except OSError as exc:
        raise ConfigError(f"{where}.{key}_file: cannot read {file}: {exc.strerror}") from None


def _check_rule(rule: RuleConfig, where: str) -> None:
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


FORMATS = ("seed_json", "tasmota", "shelly_gen1", "shelly_gen2", "number", "json", "csv", "key_value")


def load_config(path: str | Path) -> AgentConfig:
    """Parse and validate the agent's configuration file."""
    path = Path(path)
    doc = _read_document(path)
    where = str(path)
    agent = dict(doc.get("agent") or {})
    state_dir = Path(agent.pop("state_dir", None) or os.environ.get("EDGE_AGENT_STATE_DIR") or "/var/lib/edge-agent")
    if not state_dir.is_absolute():
        state_dir = (path.parent / state_dir).resolve()
    if agent:
        raise ConfigError(f"{where}: [agent] unknown key(s) {', '.join(sorted(agent))}; known: state_dir")

    mqtt_doc = dict(doc.get("mqtt") or {})
    password = _secret(mqtt_doc, "password", f"{where}: [mqtt]")
    mqtt = build_dataclass(MqttConfig, mqtt_doc, f"{where}: [mqtt]")
    mqtt.password = password
    if mqtt.qos not in (0, 1, 2):
        raise ConfigError(f"{where}: [mqtt].qos must be 0, 1 or 2")
    if not 0 <= mqtt.read_coalesce_s <= 1:
        raise ConfigError(f"{where}: [mqtt].read_coalesce_s must be between 0 and 1 (seconds)")

    st_doc = dict(doc.get("storage") or {})
    secrets = {k: _secret(st_doc, k, f"{where}: [storage]") for k in ("password", "token")}
    storage = build_dataclass(StorageConfig, st_doc, f"{where}: [storage]")
    storage.password, storage.token = secrets["password"], secrets["token"]
    if storage.version not in (1, 2):
        raise ConfigError(f"{where}: [storage].version must be 1 or 2")
    if storage.version == 2 and not (storage.token and storage.org):
        raise ConfigError(f"{where}: [storage] version 2 needs org and token (token_file or token_env)")

    rules_doc = doc.get("rules") or []
    if not isinstance(rules_doc, list) or not rules_doc:
        raise ConfigError(f"{where}: at least one [[rules]] entry is needed")
    rules = []
    for i, r in enumerate(rules_doc):
        rule = build_dataclass(RuleConfig, r, f"{where}: rules[{i}]")
        if rule.format not in FORMATS:
            raise ConfigError(f"{where}: rules[{i}].format {rule.format!r} unknown; one of {', '.join(FORMATS)}")
        rule.name = rule.name or f"{rule.format}:{rule.topic}"
        _check_rule(rule, f"{where}: rules[{i}]")
        rules.append(rule)

    ingest = build_dataclass(IngestConfig, doc.get("ingest"), f"{where}: [ingest]")
    for key in ("queue_max_messages", "queue_max_bytes", "deadletter_keep", "deadletter_max_bytes",
                "max_payload_bytes"):
        if getattr(ingest, key) < 1:
            raise ConfigError(f"{where}: [ingest].{key} must be at least 1")
    if ingest.max_series_per_rule < 0:
        raise ConfigError(f"{where}: [ingest].max_series_per_rule must be 0 (no bound) or more")
    if ingest.queue_max_bytes < ingest.max_payload_bytes:
        raise ConfigError(f"{where}: [ingest].queue_max_bytes must be at least max_payload_bytes "
                          f"({ingest.max_payload_bytes}): every admissible message must fit")
    spool = build_dataclass(SpoolConfig, doc.get("spool"), f"{where}: [spool]")
    for key, ok, what in (("commit_interval_s", 0 <= spool.commit_interval_s <= 300, "between 0 and 300 (seconds)"),
                          ("commit_max_messages", spool.commit_max_messages >= 1, "at least 1"),
                          ("cursor_interval_s", spool.cursor_interval_s >= 0, "0 or more (seconds)")):
        if not ok:
            raise ConfigError(f"{where}: [spool].{key} must be {what}, not {getattr(spool, key)!r}")
    publish_doc = doc.get("publish")
    if publish_doc is None:  # the first release kept these in [forecast]
        legacy = doc.get("forecast") if isinstance(doc.get("forecast"), dict) else {}
        names = {"topic_prefix": "topic_prefix", "node_id": "node_id", "ha_discovery": "discovery",
                 "discovery_prefix": "discovery_prefix"}
        publish_doc = {new: legacy[old] for old, new in names.items() if old in legacy}
    publish = build_dataclass(PublishConfig, publish_doc, f"{where}: [publish]")
    for key in ("topic_prefix", "node_id", "discovery_prefix"):
        value = getattr(publish, key)
        if not value or any(c in value for c in "#+\0") or value.startswith("/") or value.endswith("/"):
            raise ConfigError(f"{where}: [publish].{key} {value!r} is not a usable MQTT topic part")
    cfg = AgentConfig(
        path=path, state_dir=state_dir, mqtt=mqtt, storage=storage,
        spool=spool,
        ingest=ingest,
        health=build_dataclass(HealthConfig, doc.get("health"), f"{where}: [health]"),
        logging=build_dataclass(LoggingConfig, doc.get("logging"), f"{where}: [logging]"),
        rules=rules, raw=doc, publish=publish,
    )
    # Compile the rules now so that a bad pattern is a config error, not a runtime surprise.
    from edge_agent.ingest.rules import RuleError, compile_rules

    try:
        compile_rules(cfg.rules)
    except RuleError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    # [retention] decides where what lasts is written and read, for every Storage made from cfg.storage
    from edge_agent.retention.config import apply as apply_retention

    apply_retention(cfg)
    return cfg
