"""`edge-agent check` refuses what an installer would otherwise never notice. A section name it does not know (a typo
turned a whole component off, silently); a value out of range, checked the same way for every section, on the field
itself (shared/config.py `setting`): the error names the file, the section, the key, what it wants and the value."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edge_agent import cli
from edge_agent.config import KNOWN_SECTIONS, load_config
from shared.signing import generate_keypair
from tests.helpers.agent import write_config

API = '[api]\ntoken = "0123456789abcdef0123"\npublic_key = "{key}"\n'
FLOW = '[flow]\n{line}\n[[flow.devices]]\nrole = "grid"\nmeasurement = "meter"\nimport_field = "in"\n'


def refused(tmp_path, capsys, extra: str) -> tuple[Path, str]:
    """`edge-agent check --offline` of the test config plus `extra`: it must refuse it; the file and stderr."""
    path = write_config(tmp_path, 1883, "http://127.0.0.1:8086", "energy", extra=extra)
    assert cli.main(["check", "--config", str(path), "--offline"]) == 2
    return path, capsys.readouterr().err


@pytest.mark.parametrize("section, line, message", [
    ("[alerts]", "quiet_s = -1", "[alerts].quiet_s must be 0 (off) or more (seconds), not -1.0"),
    ("[alerts]", "disk_free_ratio = 1", "[alerts].disk_free_ratio must be at least 0 and below 1, not 1.0"),
    ("[alerts]", "publish_every_s = 5", "[alerts].publish_every_s must be at least 10 (seconds), not 5.0"),
    ("[retention]", "raw_days = 0", "[retention].raw_days must be between 1 and 36500 (days), not 0.0"),
    ("[retention]", "lookback_slots = 97", "[retention].lookback_slots must be between 1 and 96, not 97"),
    ("[retention]", 'counters = ["a", ""]', "[retention].counters must be a list of non-empty strings"),
    ("[retention]", "raw_days = 30\nkeep_days = 10", "[retention].keep_days must be 0 (forever) or at least raw_days"),
    ("api", "port = 70000", "[api].port must be between 0 and 65535, not 70000"),
    ("api", "max_header_bytes = 100", "[api].max_header_bytes must be between 1024 and 65536, not 100"),
    ("[forecast]", "guard_days = 31", "[forecast].guard_days must be between 0 and 30 (days; skill is kept 30 "
                                      "days), not 31.0"),
    ("[weather]", "max_age_h = 200", "[weather].max_age_h must be between 0 and 168 (hours), not 200.0"),
    ("[weather]", "open_meteo_every_min = 1", "[weather].open_meteo_every_min must be at least 5 (minutes), not 1.0"),
    ("[weather]", "latitude = 91.0", "[weather].latitude must be between -90 and 90, not 91.0"),
    ("flow", "gap_s = -1", "[flow].gap_s must be 0 or more (seconds), not -1.0"),
    ("flow", "lookback_slots = 0", "[flow].lookback_slots must be at least 1, not 0"),
    ("[backup]", "keep = 0", "[backup].keep must be at least 1, not 0"),
])
def test_a_value_out_of_range_is_named_with_what_it_should_be(tmp_path, capsys, section, line, message):
    extra = (API.format(key=generate_keypair().public_text) + line if section == "api"
             else FLOW.format(line=line) if section == "flow" else f"{section}\n{line}\n")
    extra += "\n[forecast]\n" if section == "[weather]" else ""  # [weather] is the forecast's input
    path, err = refused(tmp_path, capsys, extra)
    assert f"config error: {path}: {message}" in err, err


def test_the_flow_devices_are_checked_on_their_fields(tmp_path, capsys):
    path, err = refused(tmp_path, capsys,
                        '[flow]\n[[flow.devices]]\nrole = "heatpump"\nmeasurement = "m"\nimport_field = "in"\n')
    assert f"{path}: [flow].devices[0].role must be grid, pv, battery or consumer, not 'heatpump'" in err


def test_a_misspelt_section_is_refused_with_the_known_ones(tmp_path, capsys):
    """`[forcast]` passed the check as "config OK", and the house ran without a forecast."""
    path, err = refused(tmp_path, capsys, "[forcast]\nenabled = true\n")
    assert f"config error: {path}: unknown section(s) forcast; known: " in err and "forecast" in err, err


def test_every_shipped_config_uses_known_sections_only():
    """The examples load (each is a whole config), and Ansible's template names known sections only."""
    root = Path(__file__).resolve().parents[2]
    examples = sorted((root / "edge_agent" / "examples").glob("*.toml"))
    assert len(examples) >= 10
    for path in examples:
        load_config(path)
    template = (root / "ansible" / "roles" / "edge_agent" / "templates" / "agent.toml.j2").read_text()
    sections = set(re.findall(r"^\[\[?([a-z_]+)", template, flags=re.M))
    assert len(sections) >= 5 and sections <= KNOWN_SECTIONS, sections - KNOWN_SECTIONS


def test_every_component_has_a_known_section():
    from edge_agent.agent import COMPONENTS

    assert {spec.name for spec in COMPONENTS} <= KNOWN_SECTIONS


def test_weather_without_a_forecast_is_refused(tmp_path, capsys):
    """[weather] is read by the forecast only: alone, it recorded nothing and passed the check."""
    path, err = refused(tmp_path, capsys, '[weather]\nmeasurement = "t"\n')
    assert f"{path}: [weather] is read by [forecast]: add a [forecast] section" in err


def test_the_reference_table_documents_every_section_and_key_and_no_other():
    """docs/edge-agent.md "Configuration reference": every section the agent knows is there, every `section.key` it
    names exists, and every key of the sections it details is named ([alerts] and [backup] were missing)."""
    from edge_agent import config as c
    from edge_agent.backup import BackupConfig
    from edge_agent.retention.config import RetentionConfig
    from edge_agent.runtime.problems import AlertsConfig
    from shared.storage.base import StorageConfig

    text = (Path(__file__).resolve().parents[2] / "docs" / "edge-agent.md").read_text()
    table = text[text.index("## Configuration reference"):text.index("### Rules")]
    firsts = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    named = {(s, k) for cell in firsts for s, k in re.findall(r"`([a-z_]+)\.([a-z_]+)", cell)}
    sections = {s for s, _ in named} | {s for cell in firsts for s in re.findall(r"`\[\[?([a-z_]+)\]\]?`", cell)}
    assert sections == set(c.KNOWN_SECTIONS)
    detailed = {"mqtt": c.MqttConfig, "storage": StorageConfig, "spool": c.SpoolConfig, "ingest": c.IngestConfig,
                "health": c.HealthConfig, "logging": c.LoggingConfig, "publish": c.PublishConfig,
                "retention": RetentionConfig, "alerts": AlertsConfig, "backup": BackupConfig}
    internal = {("storage", "keep_policy")}  # routed from [retention] (edge_agent.config._keep_policy)
    fields = {(s, f.name) for s, cls in detailed.items() for f in dataclasses.fields(cls)} - internal
    assert {(s, k) for s, k in named if s in detailed} - fields == set()  # no key that does not exist
    assert fields - named == set()  # no key left out


@pytest.mark.parametrize("start, end, section", [("## Forecast loop", "### Weather bundles", "forecast"),
                                                 ("### Weather bundles", "## Live skill", "weather"),
                                                 ("## Model API", "## CLI", "api")])
def test_the_components_tables_document_every_key_and_no_other(start, end, section):
    """docs/edge-models.md's tables of [forecast], [weather] and [api] against their dataclasses ([weather]'s
    Open-Meteo timing and [forecast]'s `away` were missing)."""
    from edge_agent.api.component import ApiConfig
    from edge_agent.forecast.component import ForecastConfig
    from edge_agent.forecast.weather import WeatherConfig

    cls = {"forecast": ForecastConfig, "weather": WeatherConfig, "api": ApiConfig}[section]
    text = (Path(__file__).resolve().parents[2] / "docs" / "edge-models.md").read_text()
    part = text[text.index(start):text.index(end)]
    documented = {k for line in part.splitlines() if line.startswith("| `")
                  for k in re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])}
    secrets = {f"{k}_{v}" for k in ("token", "public_key") for v in ("file", "env")} if section == "api" else set()
    assert documented - secrets == {f.name for f in dataclasses.fields(cls)}
