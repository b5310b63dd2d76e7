"""A node's agent API over https, verified against the node's own `ca_file` (the agent's self-signed certificate):
registered with it the node is reachable, without it the system CAs refuse the certificate; a bad ca_file is a
400 naming the field. Real agent, real TLS on loopback."""

from __future__ import annotations

import sqlite3

import pytest

from server.db import Database
from shared import signing
from tests.helpers.agent import start_agent
from tests.helpers.models import TOKEN as AGENT_TOKEN
from tests.helpers.models import agent_config
from tests.helpers.server import AUTH
from tests.helpers.tls import self_signed


@pytest.fixture
def tls_agent(tmp_path, mosquitto_session, influxd_session, influx_db_name, app):
    cert, key = self_signed(tmp_path / "tls")
    keys = signing.KeyPair(app.extensions["home_energy"].keys.private)
    cfg = agent_config(tmp_path / "agent", mosquitto_session.port, influxd_session.url, influx_db_name, keys,
                       api_extra=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\ntimeout_s = 2\n')
    agent = start_agent(cfg, components=("api",))
    agent.url, agent.cert, agent.key = agent.components["api"].url, cert, key
    yield agent
    agent.stop()


def add(c, name: str, url: str, **extra):
    return c.post("/api/v1/nodes", headers=AUTH, json={"name": name, "api_url": url, "api_token": AGENT_TOKEN,
                                                       **extra})


def test_an_https_node_is_verified_against_its_ca_file(app, tls_agent, tmp_path):
    c = app.test_client()
    assert tls_agent.url.startswith("https://")
    r = add(c, "pi-tls", tls_agent.url, ca_file=str(tls_agent.cert))
    assert r.status_code == 201, r.json
    assert r.json["ca_file"] == str(tls_agent.cert) and r.json["status"]["reachable"] is True, r.json
    refreshed = c.get(f"/api/v1/nodes/{r.json['id']}?refresh=1", headers=AUTH).json
    assert refreshed["status"]["reachable"] is True and refreshed["status"]["interpreter"]["name"]
    # without its certificate (system CAs), or with another one: TLS refuses the agent
    other, _ = self_signed(tmp_path / "other")
    for name, extra in (("pi-system-cas", {}), ("pi-other-ca", {"ca_file": str(other)})):
        r = add(c, name, tls_agent.url, **extra)
        assert r.status_code == 201 and r.json["status"]["reachable"] is False, r.json
        assert r.json["status"]["code"] == "tls_error", r.json


def test_a_bad_ca_file_is_a_400_naming_it(app, tmp_path):
    c = app.test_client()
    cert, key = self_signed(tmp_path / "tls")
    (tmp_path / "empty.pem").write_text("")
    cases = [(str(cert), "http://127.0.0.1:9"),              # TLS only
             ("tls/api-cert.pem", "https://127.0.0.1:9"),   # relative: relative to what?
             (str(tmp_path / "missing.pem"), "https://127.0.0.1:9"),
             (str(key), "https://127.0.0.1:9"),             # a PEM file, but no certificate in it
             (str(tmp_path / "empty.pem"), "https://127.0.0.1:9"),
             (str(tmp_path), "https://127.0.0.1:9"),
             *((bad, "https://127.0.0.1:9") for bad in (1, True, [], {}, ["x"], "a" * 2000, "\x00"))]
    for i, (value, url) in enumerate(cases):
        r = add(c, f"bad-{i}", url, ca_file=value)
        assert r.status_code == 400 and r.json["error"]["field"] == "ca_file", (value, r.json)
        assert "PRIVATE KEY" not in r.json["error"]["message"]
    assert c.get("/api/v1/nodes", headers=AUTH).json["nodes"] == []


def test_a_database_from_before_ca_file_gets_the_column(tmp_path):
    path = tmp_path / "server.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE nodes (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, api_url TEXT NOT NULL, "
                  "api_token TEXT NOT NULL, influx TEXT NOT NULL DEFAULT '{}', retrain_days INTEGER NOT NULL "
                  "DEFAULT 0, status TEXT, status_at REAL, created REAL NOT NULL)")
        c.execute("INSERT INTO nodes(name, api_url, api_token, created) VALUES ('old', 'http://pi:8750', 't', 0)")
    db = Database(path)
    Database(path)  # a second worker starting on it: nothing to add any more
    assert db.node_named("old")["ca_file"] is None
    nid = db.add_node("new", "https://pi:8750", "t" * 20, {}, 0, "/etc/ca.pem")
    assert db.node(nid)["ca_file"] == "/etc/ca.pem"
