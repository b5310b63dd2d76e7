"""Server fixtures: the Flask app, a logged-in test client, the job worker, a real edge agent."""

from __future__ import annotations

import pytest

from server import create_app
from server.jobs import start_worker_thread
from shared import signing
from tests.helpers.agent import start_agent
from tests.helpers.models import TOKEN as AGENT_TOKEN
from tests.helpers.models import agent_config
from tests.helpers.server import PASSWORD, csrf_of, server_config


@pytest.fixture
def app(tmp_path):
    app = create_app(server_config(tmp_path))
    app.config["TESTING"] = True
    return app


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
    agent = start_agent(cfg, components=("forecast", "api"))
    agent.url = agent.components["api"].url
    agent.token = AGENT_TOKEN
    yield agent
    agent.stop()
