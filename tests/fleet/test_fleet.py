"""Many houses, one server, training on a Ray cluster: a head and one more node on loopback (two raylets on this
machine, started with `ray start` as docs/fleet.md says), three synthetic houses derived from the real year
(tools/houses.py) each with its own InfluxDB database and its own real edge agent. Each house's scheduled-style
retrain (pull the last 60 days, quick training, push if better) runs as a Ray task.

It proves: the tasks ran on both nodes, two at a time (the cluster's capacity) and never more; each house's registry
holds only its own versions (trained for it: `data.node`); each agent received only its own models; nothing of Ray
listened beyond loopback; the cluster's processes are gone afterwards (also when the test fails: the fixture stops
them by process id)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server import create_app
from server.jobs import TRAIN_SPAN, start_worker_thread
from shared import signing
from shared.storage import StorageConfig, open_storage
from tests.helpers.agent import start_agent
from tests.helpers.models import TOKEN as AGENT_TOKEN
from tests.helpers.models import agent_config
from tests.helpers.server import AUTH, server_config
from tools.houses import houses, points, readings
from tools.raycluster import RayCluster

HOUSES = 3
DAYS = 60
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


@pytest.fixture
def ray_cluster(tmp_path, monkeypatch):
    with RayCluster(tmp_path / "ray", nodes=2, cpus_per_node=1) as cluster:
        for k, v in cluster.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        yield cluster
    assert cluster.processes() == [], "Ray processes outlived the cluster"


@pytest.fixture
def fleet(tmp_path, mosquitto_session, influxd_session, influx_db_name, ray_cluster):
    """The server (Flask app + job worker thread = the Ray driver) and three houses, each with its history in its
    own database and a real agent trusting the server's key."""
    app = create_app(server_config(tmp_path, jobs={"ray_address": ray_cluster.address, "cpus_per_job": 1}))
    s = app.extensions["home_energy"]
    end = datetime.now(UTC)
    agents = []
    try:
        for house in houses(HOUSES, seed=7):
            db = f"{influx_db_name[:40]}_{house.name.replace('-', '_')}"
            influxd_session.query(f'DROP DATABASE "{db}"', method="POST")
            influxd_session.create_database(db)
            st = open_storage(StorageConfig(url=influxd_session.url, database=db))
            st.write(points(readings(house, end, DAYS)))
            st.close()
            cfg = agent_config(tmp_path / house.name, mosquitto_session.port, influxd_session.url, db,
                               signing.KeyPair(s.keys.private))
            agent = start_agent(cfg, components=("forecast", "api"))
            agent.house, agent.db = house, db
            agents.append(agent)
        worker = start_worker_thread(s)
        yield app, agents
        worker.stop()
        deadline = time.monotonic() + 60
        while worker.cluster.started and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for agent in agents:
            agent.stop()


def _listening(processes) -> set[str]:
    out = set()
    for p in processes:
        try:
            for conn in p.net_connections(kind="inet"):
                if conn.status == "LISTEN":
                    out.add(conn.laddr.ip)
        except Exception:
            continue
    return out


@pytest.mark.timeout(1800)
def test_three_houses_train_on_two_ray_nodes_and_each_gets_only_its_own_models(fleet, ray_cluster, influxd_session):
    app, agents = fleet
    s = app.extensions["home_energy"]
    c = app.test_client()
    node_of = {}
    for agent in agents:
        r = c.post("/api/v1/nodes", headers=AUTH, json={
            "name": agent.house.name, "api_url": agent.components["api"].url, "api_token": AGENT_TOKEN,
            "influx": {"url": influxd_session.url, "database": agent.db, "tags": {"device_id": "meter-1"}}})
        assert r.status_code == 201 and r.json["status"]["reachable"], r.json
        node_of[agent.house.name] = r.json
    jobs = {name: c.post(f"/api/v1/nodes/{n['id']}/train", headers=AUTH,
                         json={"pull_days": DAYS, "quick": True, "auto_push": True}).json
            for name, n in node_of.items()}
    listening: set[str] = set()
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        rows = {name: c.get(f"/api/v1/jobs/{j['id']}", headers=AUTH).json for name, j in jobs.items()}
        if all(r["state"] not in ("queued", "running") for r in rows.values()):
            break
        if any(r["state"] == "running" and r["percent"] >= TRAIN_SPAN[0] for r in rows.values()):
            listening |= _listening(ray_cluster.processes())  # while tasks run: Ray's workers listen too
        time.sleep(2)
    assert all(r["state"] == "done" for r in rows.values()), {n: (r["state"], r["error"], r["log"][-1500:])
                                                              for n, r in rows.items()}

    # where they ran: both raylets, two at a time at most (2 CPUs, 1 per job), the job table says so
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]} if ray.is_initialized() else set()
    ran_on = {r["ray_node"] for r in rows.values()}
    assert len(ran_on) == 2 and (not alive or ran_on <= alive), (ran_on, alive)
    spans = sorted((r["started"], r["finished"]) for r in rows.values())
    overlap = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert overlap == 2, spans
    assert all(r["peak_mb"] > 50 and r["host"] for r in rows.values())

    for agent in agents:
        name, node = agent.house.name, node_of[agent.house.name]
        # the house's registry: its own versions only, trained for it
        versions = c.get(f"/api/v1/nodes/{node['id']}/models", headers=AUTH).json["versions"]
        assert len(versions) == 4 and {v["owner"] for v in versions} == {f"node:{node['id']}"}
        for v in versions:
            row = s.registry.get(v["owner"], v["name"], v["version"])
            assert json.loads((Path(row["path"]) / "manifest.json").read_text())["data"]["node"] == name
        mine = {v["name"]: v["sha256"] for v in versions}
        others = {v["sha256"] for other in node_of.values() if other["id"] != node["id"]
                  for v in c.get(f"/api/v1/nodes/{other['id']}/models", headers=AUTH).json["versions"]}
        # the agent runs exactly its own models, and their manifests say whose they are
        status = agent.components["api"].status()
        for bundle, sha in mine.items():
            active = status["models"][bundle]["active"]
            assert active and active["sha256"] == sha and active["sha256"] not in others, (name, bundle, active)
            stored = agent.components["api"].models.store.active(bundle)
            assert json.loads((stored.path / "manifest.json").read_text())["data"]["node"] == name
        assert rows[name]["result"]["pulled"]["rows"] > 50 * 96

    # Ray stayed on loopback (sampled while the tasks ran, and now)
    listening |= _listening(ray_cluster.processes())
    assert listening and listening <= set(LOOPBACK), listening
