"""Fixtures: a server key pair, signed bundles, and an agent (in-process) with the model API and forecasts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shared import signing
from tests.helpers.agent import start_agent, write_config

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="session")
def server_keys():
    return signing.generate_keypair()


def sign_copy(src: Path, dst: Path, keys, version: str | None = None, mutate=None) -> Path:
    """Copy a bundle, optionally change its manifest (version, or any mutation), and sign it."""
    shutil.copytree(src, dst)
    if version or mutate:
        doc = json.loads((dst / "manifest.json").read_text())
        if version:
            doc["version"] = version
        if mutate:
            mutate(doc)
        (dst / "manifest.json").write_text(json.dumps(doc, indent=2))
    signing.sign_bundle_dir(dst, keys)
    return dst


@pytest.fixture
def signed(seed_bundles, server_keys, tmp_path):
    def make(name: str = "cnn-1", version: str | None = None, mutate=None, tag: str = "") -> Path:
        return sign_copy(seed_bundles / name, tmp_path / f"{name}-{version or 'orig'}{tag}", server_keys, version,
                         mutate)
    return make


def agent_config(tmp_path, mosquitto_port, influx_url, db, keys, forecast_extra: str = "", api: bool = True,
                 api_extra: str = ""):
    extra = f"""
[forecast]
measurement = "EnergyMeter"
field = "EnergyIn"
tags = {{ device_id = "meter-1" }}
delay_s = 0
topic_prefix = "he-test"
node_id = "testnode"
{forecast_extra}
"""
    if api:
        extra += f"""
[api]
bind = "127.0.0.1"
port = 0
token = "{TOKEN}"
public_key = "{keys.public_text}"
max_bundle_bytes = 300000
{api_extra}
"""
    return write_config(tmp_path, mosquitto_port, influx_url, db, extra=extra, client_id=f"agent-{db}")


@pytest.fixture
def agent_with_api(tmp_path, mosquitto_session, influxd_session, influx_db_name, server_keys):
    cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys)
    agent = start_agent(cfg, components=("forecast", "api"))
    yield agent
    agent.stop()
