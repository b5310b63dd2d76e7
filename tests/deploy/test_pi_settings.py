"""What Ansible and docker-compose ship for the Pi's write budget is what `make bench-wear` measured (docs/pi.md):
the settings live once in tools/benchmarks/bench_wear.py and every shipped file must say the same."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from tools.benchmarks.bench_wear import PI_AGENT_SPOOL, PI_INFLUXD, PI_MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "ansible" / "roles"


def defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())


def conf_value(text: str, key: str) -> str:
    [value] = re.findall(rf"^\s*{re.escape(key)}\s*=?\s*(\S+)\s*$", text, flags=re.M)
    return value.strip('"')


def test_the_agent_commits_in_groups_as_measured():
    d = defaults("edge_agent")
    assert d["edge_agent_commit_interval_s"] == PI_AGENT_SPOOL["commit_interval_s"]
    assert d["edge_agent_commit_max_messages"] == PI_AGENT_SPOOL["commit_max_messages"]
    template = (ROLES / "edge_agent" / "templates" / "agent.toml.j2").read_text()
    assert "commit_interval_s = {{ edge_agent_commit_interval_s }}" in template
    assert not re.search(r"^file\s*=", template, flags=re.M)  # logs go to journald, not to a file of their own
    compose = tomllib.loads((ROOT / "edge_agent" / "examples" / "compose-agent.toml").read_text())["spool"]
    assert compose["commit_interval_s"] == PI_AGENT_SPOOL["commit_interval_s"]
    assert compose["commit_max_messages"] == PI_AGENT_SPOOL["commit_max_messages"]


def test_mosquitto_saves_every_half_hour_and_lets_a_group_wait():
    d = defaults("mosquitto")
    assert d["mosquitto_autosave_interval"] == PI_MOSQUITTO["autosave_interval"]
    assert d["mosquitto_max_inflight_messages"] == PI_MOSQUITTO["max_inflight_messages"]
    assert PI_MOSQUITTO["max_inflight_messages"] > PI_AGENT_SPOOL["commit_max_messages"]
    compose = (ROOT / "edge_agent" / "examples" / "compose-mosquitto.conf").read_text()
    assert int(conf_value(compose, "autosave_interval")) == PI_MOSQUITTO["autosave_interval"]
    assert int(conf_value(compose, "max_inflight_messages")) == PI_MOSQUITTO["max_inflight_messages"]


def test_influxd_keeps_no_internal_statistics_and_fsyncs_every_write():
    conf = (ROLES / "influxdb" / "templates" / "influxdb.conf.j2").read_text()
    assert conf_value(conf, "store-enabled") == "false" and not PI_INFLUXD["monitor-store-enabled"]
    assert conf_value(conf, "wal-fsync-delay") == "0s" and PI_INFLUXD["wal-fsync-delay"] == 0
    assert conf_value(conf, "cache-snapshot-write-cold-duration") == "10m"
    assert conf_value(conf, "compact-full-write-cold-duration") == "4h"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["influxdb"]["environment"]
    assert env["INFLUXDB_MONITOR_STORE_ENABLED"] == "false"
    assert all(svc.get("logging", {}).get("options", {}).get("max-size") for svc in compose["services"].values())


def test_journald_is_bounded_on_the_pi():
    text = (ROLES / "edge_agent" / "templates" / "journald-home-energy.conf.j2").read_text()
    assert "SystemMaxUse={{ edge_agent_journal_max_use }}" in text and "MaxLevelStore=info" in text
    unit = (ROLES / "edge_agent" / "templates" / "edge-agent.service.j2").read_text()
    assert "LogRateLimitBurst=" in unit
