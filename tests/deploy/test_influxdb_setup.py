"""The influxdb role's InfluxDB 1.x setup tasks, run by ansible against a real influxd with auth on — the part of
the default deployment that the chroot test skips (no service may start there).

Then the agent's config as the edge_agent role renders it writes with the agent's user, and Grafana's
environment file (the grafana role's) reads with the read-only user: the whole 1.x credential path."""

from __future__ import annotations

import base64
import json
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import pytest

from shared.points import Point
from shared.storage import open_storage
from shared.storage.base import StorageConfig, StorageError
from tests.deploy.ansible_local import (
    AVAILABLE,
    ROLES,
    SKIP_REASON,
    VAULT,
    PlayFailed,
    changed,
    play,
    render,
    task_results,
)
from tools.services import Influxd

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)

SETUP = [{"name": "The influxdb role's setup", "ansible.builtin.include_role": {"name": "influxdb",
                                                                              "tasks_from": "setup-v1.yml"}}]
# a recent whole second: the setup gives raw readings a 90-day policy, which refuses older points
T0 = (time.time_ns() // 10**9 - 86_400) * 10**9


@pytest.fixture
def influxd_auth(tmp_path):
    with Influxd(tmp_path / "influxd", auth=True) as db:
        yield db


def setup_vars(db: Influxd, **extra) -> dict:
    return {"influxdb_port": db.port, "influxdb_setup_wait_seconds": 10,
            "influxdb_setup_script": str(ROLES / "influxdb" / "files" / "influxdb1_setup.py"), **extra}


def query(db: Influxd, q: str, user: str, password: str, path: str = "/query", body: bytes | None = None,
          params: dict | None = None) -> tuple[int, dict]:
    url = f"{db.url}{path}?" + urllib.parse.urlencode({"db": "energy", **(params or {}), **({"q": q} if q else {})})
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def agent_storage(tmp_path, db: Influxd, password_file_value: str) -> StorageConfig:
    """[storage] of the agent.toml the edge_agent role renders (pointed at the test influxd), with its secret."""
    conf = tomllib.loads(render(tmp_path / "agent", "edge_agent", "agent.toml.j2",
                                {"influxdb_port": db.port, "edge_agent_api_bind": "127.0.0.1"}))["storage"]
    assert conf.pop("password_file") == "/etc/edge-agent/influxdb-secret"
    return StorageConfig(password=password_file_value, **conf)


def grafana_env(tmp_path, db: Influxd) -> dict[str, str]:
    text = render(tmp_path / "grafana", "grafana", "grafana-env.j2", {"influxdb_port": db.port})
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_setup_makes_the_agent_write_and_grafana_read_and_a_second_run_changes_nothing(tmp_path, influxd_auth):
    db = influxd_auth
    first = play(tmp_path / "run1", SETUP, setup_vars(db))
    assert changed(first) == 1
    assert changed(play(tmp_path / "run2", SETUP, setup_vars(db))) == 0

    # the agent, configured as the role renders it, writes with its own (non-admin) user
    storage = open_storage(agent_storage(tmp_path, db, VAULT["vault_influxdb_agent_password"]))
    storage.write([Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": 1.5}, T0)])
    storage.close()
    # Grafana's datasource credentials read it, and may not write
    env = grafana_env(tmp_path, db)
    assert env["INFLUXDB_URL"] == db.url and "INFLUXDB_TOKEN" not in env
    status, doc = query(db, 'SELECT "EnergyIn" FROM "EnergyMeter"', env["INFLUXDB_USER"], env["INFLUXDB_PASSWORD"])
    assert status == 200 and doc["results"][0]["series"][0]["values"] == [[datetime.fromtimestamp(T0 // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), 1.5]]
    status, _ = query(db, "", env["INFLUXDB_USER"], env["INFLUXDB_PASSWORD"], "/write", b"m v=1 1")
    assert status == 403
    # the admin is the vault's
    status, doc = query(db, "SHOW USERS", "admin", VAULT["vault_influxdb_admin_password"])
    assert status == 200
    assert sorted(map(tuple, doc["results"][0]["series"][0]["values"])) == [
        ("admin", True), ("edge-agent", False), ("reader", False)]


def test_a_rotated_password_is_applied(tmp_path, influxd_auth):
    db = influxd_auth
    play(tmp_path / "run1", SETUP, setup_vars(db))
    doc = play(tmp_path / "run2", SETUP, setup_vars(db, influxdb_agent_password="rotated-agent-password"))
    assert changed(doc) == 1
    assert task_results(doc)["Report the setup's changes"]["msg"] == ["set the password of edge-agent"]
    with pytest.raises(StorageError) as exc:
        open_storage(agent_storage(tmp_path / "old", db, VAULT["vault_influxdb_agent_password"])).write(
            [Point("m", {}, {"v": 1.0}, T0)])
    assert exc.value.status == 401
    open_storage(agent_storage(tmp_path / "new", db, "rotated-agent-password")).write([Point("m", {}, {"v": 1.0}, T0)])


def test_a_wrong_admin_password_stops_the_play_with_the_reason_and_no_secret(tmp_path, influxd_auth):
    db = influxd_auth
    play(tmp_path / "run1", SETUP, setup_vars(db))
    with pytest.raises(PlayFailed) as exc:
        play(tmp_path / "run2", SETUP, setup_vars(db, influxdb_admin_password="not-the-admin-password"))
    out = exc.value.stdout + exc.value.stderr
    assert "the server was set up with another admin password" in out
    for secret in ("not-the-admin-password", VAULT["vault_influxdb_agent_password"],
                   VAULT["vault_influxdb_reader_password"]):
        assert secret not in out
