"""The agent's config as the edge_agent role renders it (ansible's own engine, the role's defaults): it passes
`edge-agent check`, and a heat pump house gets its outdoor temperature input from the role's variables."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_agent import cli
from tests.deploy.ansible_local import AVAILABLE, SKIP_REASON, PlayFailed, render

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)


def rendered(tmp: Path, **extra) -> tuple[Path, dict]:
    """The rendered config with its secret files in place (what the role's tasks write beside it)."""
    config_dir = tmp / "etc"
    config_dir.mkdir(parents=True, exist_ok=True)
    for name, value in (("api-token", "0123456789abcdef0123"), ("mqtt-password", "pw"), ("influxdb-secret", "pw")):
        (config_dir / name).write_text(value + "\n")
    text = render(tmp, "edge_agent", "agent.toml.j2",
                  {"edge_agent_config_dir": str(config_dir), "edge_agent_state_dir": str(tmp / "state"), **extra})
    path = config_dir / "agent.toml"
    path.write_text(text)
    return path, tomllib.loads(text)


def check(path: Path, capsys) -> None:
    assert cli.main(["check", "--config", str(path), "--offline"]) == 0, capsys.readouterr().err


def test_the_default_house_has_no_temperature_input(tmp_path, capsys):
    path, doc = rendered(tmp_path)
    check(path, capsys)
    assert "weather" not in doc and "forecast" in doc


def test_a_heat_pump_house_gets_its_outdoor_temperature_and_a_forecast(tmp_path, capsys):
    """The measured temperature as an ingest rule stores it, and Open-Meteo at the house's coordinates."""
    path, doc = rendered(tmp_path, edge_agent_weather=True, edge_agent_weather_measurement="sensor",
                         edge_agent_weather_field="temperature", edge_agent_weather_tags={"room": "outdoor"},
                         edge_agent_open_meteo=True, edge_agent_latitude=47.37, edge_agent_longitude=8.54)
    check(path, capsys)
    assert doc["weather"] == {"measurement": "sensor", "field": "temperature", "tags": {"room": "outdoor"},
                              "open_meteo": True, "latitude": 47.37, "longitude": 8.54}


def test_the_forecast_from_home_assistant_needs_no_more_than_the_switch(tmp_path, capsys):
    """Home Assistant publishes the forecast on the retained topic (docs/home-assistant.md): `[weather]` alone."""
    path, doc = rendered(tmp_path, edge_agent_weather=True)
    check(path, capsys)
    assert doc["weather"] == {}


def test_open_meteo_without_the_coordinates_stops_the_play(tmp_path):
    """Not a forecast for 0° N 0° E: the play names the two variables."""
    with pytest.raises(PlayFailed) as err:
        rendered(tmp_path, edge_agent_weather=True, edge_agent_open_meteo=True, edge_agent_longitude=8.54)
    text = err.value.stdout + err.value.stderr
    assert "edge_agent_open_meteo needs edge_agent_latitude and edge_agent_longitude" in text, text[-3000:]
