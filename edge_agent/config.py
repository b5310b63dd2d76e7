"""Agent configuration: TOML or YAML, validated into dataclasses with error messages that name the key.

The agent's own sections (`agent`, `mqtt`, `storage`, `spool`, `ingest`, `health`, `logging`, `publish`) are
built here; sections owned by a component (`[[rules]]` by ingest, edge_agent/ingest/ruleconfig.py; `flow`,
`forecast`, `retention`, `api`, `alerts`, …) stay in `AgentConfig.raw` and each owner parses its own, with the
validator both halves share (shared/config.py). This module is the edge's bottom layer: it imports no component.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import ConfigError, build_dataclass, setting
from shared.secrets import read_secret
from shared.storage.base import StorageConfig

__all__ = ["AgentConfig", "ConfigError", "build_dataclass", "load_config"]

KEEP_POLICY = "keep"  # the retention policy what lasts is written to ([retention] keep_policy)
_POLICY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def at_least_one(v: float) -> bool:
    """A `setting` check, wants="at least 1" (the components' sections use it too)."""
    return v >= 1


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
    qos: int = setting(1, check=lambda v: v in (0, 1, 2), wants="0, 1 or 2")
    subscribe: list[str] = field(default_factory=list)  # default: the rules' topics
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    # messages trickling in are read in groups (see edge_agent/runtime/mqtt_client.py)
    read_coalesce_s: float = setting(0.1, check=lambda v: 0 <= v <= 1, wants="between 0 and 1 (seconds)")

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
    commit_interval_s: float = setting(5.0, check=lambda v: 0 <= v <= 300, wants="between 0 and 300 (seconds)")
    commit_max_messages: int = setting(16, check=at_least_one, wants="at least 1")
    # while a backlog drains, the spool's cursor is written at most this often
    cursor_interval_s: float = setting(5.0, check=lambda v: v >= 0, wants="0 or more (seconds)")


@dataclass
class IngestConfig:
    max_payload_bytes: int = setting(64 * 1024, check=at_least_one, wants="at least 1")
    deadletter: str = "deadletter.jsonl"
    # rotate the dead-letter file at this size, keeping this many rotated files (what rotation deletes is counted)
    deadletter_max_bytes: int = setting(64 * 1024 * 1024, check=at_least_one, wants="at least 1")
    deadletter_keep: int = setting(5, check=at_least_one, wants="at least 1")
    # Messages received but not yet spooled. QoS 1/2 beyond the bound wait (the broker holds them);
    # QoS 0 beyond it are dropped and counted (`dropped_qos0`): at-most-once by definition.
    queue_max_messages: int = setting(10_000, check=at_least_one, wants="at least 1")
    queue_max_bytes: int = setting(32 * 1024 * 1024, check=at_least_one, wants="at least 1")
    # New series (measurement + tags) a rule may create; beyond it messages are dead-lettered as too_many_series
    # (edge_agent/ingest/series.py). 0: no bound.
    max_series_per_rule: int = setting(2000, check=lambda v: v >= 0, wants="0 (no bound) or more")


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


CORE_SECTIONS = ("agent", "mqtt", "storage", "spool", "ingest", "health", "logging", "publish")
# Sections whose owner parses them (this module imports no component): the rules (ingest), the components
# (edge_agent/agent.py COMPONENTS), the forecast's [weather], [alerts] (runtime/problems.py), [backup] (backup.py).
OWNED_SECTIONS = ("rules", "retention", "tariff", "flow", "forecast", "weather", "api", "alerts", "backup")
KNOWN_SECTIONS = frozenset(CORE_SECTIONS + OWNED_SECTIONS)
READ_BY = {"weather": "forecast"}  # sections only another section's owner reads


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


def _secret(section: dict, key: str, where: str) -> str | None:
    """`key`, `key_file` or `key_env`: the secret's value, read from a file or the environment."""
    file, env = section.pop(f"{key}_file", None), section.pop(f"{key}_env", None)
    try:
        return read_secret(section.pop(key, None), file, env)
    except OSError as exc:
        raise ConfigError(f"{where}.{key}_file: cannot read {file}: {exc.strerror}") from None


def load_config(path: str | Path) -> AgentConfig:
    """Parse and validate the agent's configuration file."""
    path = Path(path)
    doc = _read_document(path)
    where = str(path)
    unknown = sorted(str(k) for k in doc if k not in KNOWN_SECTIONS)
    if unknown:  # a misspelt section would turn its component off without a word
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SECTIONS))}")
    for section, reader in READ_BY.items():
        if section in doc and reader not in doc:
            raise ConfigError(f"{where}: [{section}] is read by [{reader}]: add a [{reader}] section (or remove "
                              f"[{section}])")
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

    st_doc = dict(doc.get("storage") or {})
    secrets = {k: _secret(st_doc, k, f"{where}: [storage]") for k in ("password", "token")}
    storage = build_dataclass(StorageConfig, st_doc, f"{where}: [storage]")
    storage.password, storage.token = secrets["password"], secrets["token"]
    if storage.version not in (1, 2):
        raise ConfigError(f"{where}: [storage].version must be 1 or 2")
    if storage.version == 2 and not (storage.token and storage.org):
        raise ConfigError(f"{where}: [storage] version 2 needs org and token (token_file or token_env)")

    ingest = build_dataclass(IngestConfig, doc.get("ingest"), f"{where}: [ingest]")
    if ingest.queue_max_bytes < ingest.max_payload_bytes:
        raise ConfigError(f"{where}: [ingest].queue_max_bytes must be at least max_payload_bytes "
                          f"({ingest.max_payload_bytes}): every admissible message must fit")
    spool = build_dataclass(SpoolConfig, doc.get("spool"), f"{where}: [spool]")
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
        raw=doc, publish=publish,
    )
    cfg.storage.keep_policy = _keep_policy(cfg)
    return cfg


def _keep_policy(cfg: AgentConfig) -> str | None:
    """Where what lasts (energy_flow, forecasts, skill, device slots) is written, for every Storage made from
    `cfg.storage`: [retention] keep_policy while retention is on, else the database's default policy (None). The
    rest of [retention] is the retention component's (edge_agent/retention/config.py)."""
    if "retention" not in cfg.raw:
        return None
    section, where = cfg.section("retention"), f"{cfg.path}: [retention]"
    enabled, keep = section.get("enabled", True), section.get("keep_policy", KEEP_POLICY)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: expected bool, got {enabled!r}")
    if not isinstance(keep, str) or not _POLICY.match(keep):
        raise ConfigError(f"{where}.keep_policy {keep!r}: letters, digits, _ . - only")
    if cfg.storage.retention_policy and keep == cfg.storage.retention_policy:
        raise ConfigError(f"{where}.keep_policy must differ from [storage] retention_policy (the raw readings')")
    return keep if enabled else None
