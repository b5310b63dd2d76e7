"""Server fixtures: config in a temp dir, the Flask app, a logged-in test client, a real edge agent."""

from __future__ import annotations

import re

import pytest
from werkzeug.security import generate_password_hash

from server.app import create_app, start_worker_thread
from server.config import load_config
from shared import signing
from tests.edge.agentutil import start_agent
from tests.edge_models.conftest import TOKEN as AGENT_TOKEN
from tests.edge_models.conftest import agent_config

PASSWORD = "correct horse battery"
API_TOKEN = "server-api-token-0123456789"


def server_config(tmp_path, **extra):
    return load_config(None, data_dir=str(tmp_path / "server"), admin_password_hash=generate_password_hash(PASSWORD),
                       api_token=API_TOKEN, session_cookie_secure=False, status_poll_s=3600, **extra)


@pytest.fixture
def app(tmp_path):
    app = create_app(server_config(tmp_path))
    app.config["TESTING"] = True
    return app


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


@pytest.fixture
def logged_in(app):
    c = app.test_client()
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf})
    assert r.status_code == 302
    c.csrf = csrf_of(c.get("/").get_data(as_text=True))
    return c


@pytest.fixture
def worker(app):
    w = start_worker_thread(app.extensions["home_energy"])
    yield w
    w.stop()


@pytest.fixture
def edge_agent(tmp_path, mosquitto_session, influxd_session, influx_db_name, app):
    """A real agent whose API trusts this server's signing key."""
    keys = app.extensions["home_energy"].keys
    cfg = agent_config(tmp_path / "agent", mosquitto_session.port, influxd_session.url, influx_db_name,
                       signing.KeyPair(keys.private))
    agent = start_agent(cfg, components=("edge_agent.forecast", "edge_agent.models.api"))
    agent.url = agent.components["edge_agent.models.api"].url
    agent.token = AGENT_TOKEN
    yield agent
    agent.stop()
