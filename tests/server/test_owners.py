"""Houses own their models: versions are kept per node (also when two houses trained in the same second), a house's
push finds only its own versions, another house's version reaches it only through an explicit, recorded seed, and
the overview says which house each active model was trained for, failing houses first."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

from server import overview
from server.db import Database
from server.registry import group_owner, node_owner
from shared import manifest as mf
from shared import signing
from shared.schema import BUNDLE_NAMES
from tests.helpers.server import AUTH


def _node(c, name: str, url: str = "http://127.0.0.1:9", token: str = "t" * 20) -> dict:
    r = c.post("/api/v1/nodes", headers=AUTH, json={"name": name, "api_url": url, "api_token": token})
    assert r.status_code == 201, r.json
    return r.json


def _register(s, seed_bundles, owner: str, name: str | None = None) -> list[dict]:
    """What a training job does with its bundles (same version for every owner: "trained in the same second")."""
    return s.registry.add_run([seed_bundles / n for n in BUNDLE_NAMES], owner, node_name=name)


def test_two_houses_trained_in_the_same_second_keep_their_own_versions(app, seed_bundles):
    s = app.extensions["home_energy"]
    c = app.test_client()
    a, b = _node(c, "house-a"), _node(c, "house-b")
    va = _register(s, seed_bundles, node_owner(a["id"]), "house-a")
    vb = _register(s, seed_bundles, node_owner(b["id"]), "house-b")
    version = mf.load(seed_bundles / "cnn-1")["version"]
    assert {v["version"] for v in va + vb} == {version}  # the same timestamp, kept twice
    for node, rows in ((a, va), (b, vb)):
        listed = c.get(f"/api/v1/nodes/{node['id']}/models", headers=AUTH).json["versions"]
        assert len(listed) == 4 and {v["owner"] for v in listed} == {f"node:{node['id']}"}
        assert {v["node_id"] for v in listed} == {node["id"]}
        assert {r["path"] for r in rows}.isdisjoint({r["path"] for r in (va if rows is vb else vb)})
    # by name and version alone it is ambiguous; with the owner it is not
    r = c.get(f"/api/v1/models/cnn-1/{version}", headers=AUTH)
    assert r.status_code == 409 and r.json["error"]["code"] == "ambiguous"
    r = c.get(f"/api/v1/models/cnn-1/{version}?node={b['id']}", headers=AUTH)
    assert r.status_code == 200 and r.json["owner"] == f"node:{b['id']}"
    # the same house again within the same second: the next second, signed as registered
    again = _register(s, seed_bundles, node_owner(a["id"]), "house-a")
    next_second = (datetime.strptime(version, "%Y%m%dT%H%M%SZ") + timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    assert {v["version"] for v in again} == {next_second}
    for row in again:
        manifest = (Path(row["path"]) / "manifest.json").read_bytes()
        assert json.loads(manifest)["version"] == next_second
        signing.verify_manifest(manifest, (Path(row["path"]) / "signature.json").read_bytes(), s.keys.public)
    assert len(c.get(f"/api/v1/nodes/{a['id']}/models", headers=AUTH).json["versions"]) == 8


def test_a_bundle_trained_for_another_node_is_refused(app, seed_bundles, tmp_path):
    import shutil

    s = app.extensions["home_energy"]
    a = _node(app.test_client(), "house-a")
    dirs = []
    for n in BUNDLE_NAMES:
        shutil.copytree(seed_bundles / n, tmp_path / n)
        doc = mf.load(tmp_path / n)
        doc["data"]["node"] = "house-b"
        (tmp_path / n / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))
        dirs.append(tmp_path / n)
    try:
        s.registry.add_run(dirs, node_owner(a["id"]), node_name="house-a")
        raise AssertionError("registered")
    except ValueError as exc:
        assert "trained for node 'house-b'" in str(exc)
    assert s.registry.list() == []


def test_another_houses_version_is_pushed_only_by_an_explicit_recorded_seed(app, logged_in, seed_bundles, edge_agent):
    s = app.extensions["home_energy"]
    c = app.test_client()
    a = _node(c, "house-a")  # trained, but its agent is not reachable here
    b = _node(c, "house-b", edge_agent.url, edge_agent.token)  # a new house without models
    version = _register(s, seed_bundles, node_owner(a["id"]), "house-a")[0]["version"]
    # the house's own push does not find house-a's version (it used to push it without a word)
    r = c.post(f"/api/v1/nodes/{b['id']}/push", headers=AUTH, json={"version": version, "override": True})
    assert r.status_code == 404 and "seed" in r.json["error"]["message"], r.json
    assert edge_agent.components["api"].status()["models"]["cnn-1"]["active"] is None
    assert s.db.all("SELECT * FROM pushes") == []
    # seeding names its source and is recorded with it
    r = c.post(f"/api/v1/nodes/{b['id']}/seed", headers=AUTH, json={"from_node": b["id"], "version": version})
    assert r.status_code == 400 and r.json["error"]["field"] == "from_node"
    r = c.post(f"/api/v1/nodes/{b['id']}/seed", headers=AUTH, json={"from_node": a["id"], "version": version,
                                                                  "names": ["cnn-1", "lstm-1"]})
    assert r.status_code == 200 and r.json["source"] == f"node:{a['id']}", r.json
    assert [x["ok"] for x in r.json["results"]] == [True, True], r.json
    assert edge_agent.components["api"].status()["models"]["cnn-1"]["active"]["version"] == version
    pushes = s.db.all("SELECT name, source, ok FROM pushes ORDER BY id")
    assert pushes == [{"name": "cnn-1", "source": f"node:{a['id']}", "ok": 1},
                      {"name": "lstm-1", "source": f"node:{a['id']}", "ok": 1}]
    # the overview and the house's page say whose model runs there
    row = next(h for h in overview.rows(s.db) if h["id"] == b["id"])
    cnn = next(m for m in row["models"] if m["name"] == "cnn-1")
    assert cnn["version"] == version and not cnn["own"] and cnn["trained_for"] == "house-a"
    page = logged_in.get(f"/nodes/{b['id']}").get_data(as_text=True)
    assert "trained for house-a" in page and f"seeded from node:{a['id']}" in page
    # the page's seed form does nothing without its confirmation
    before = len(s.db.all("SELECT * FROM pushes"))
    logged_in.post(f"/nodes/{b['id']}/seed", data={"csrf_token": logged_in.csrf, "run": f"node:{a['id']}/{version}"})
    assert len(s.db.all("SELECT * FROM pushes")) == before


def test_the_gate_finds_the_active_model_by_its_hash_not_its_version(app, seed_bundles, edge_agent):
    """Two houses' versions share a timestamp: the gate compares with the model the node really runs."""
    from server import nodes

    s = app.extensions["home_energy"]
    c = app.test_client()
    a, b = _node(c, "house-a"), _node(c, "house-b", edge_agent.url, edge_agent.token)
    mine = _register(s, seed_bundles, node_owner(b["id"]), "house-b")
    theirs = _register(s, seed_bundles, node_owner(a["id"]), "house-a")
    status = {"models": {"cnn-1": {"active": {"version": mine[0]["version"], "sha256": "0" * 64}}}}
    ok, why = nodes.gate(s.registry, status, theirs[0], None)
    assert not ok and "not in this registry" in why
    status["models"]["cnn-1"]["active"]["sha256"] = mine[0]["sha256"]
    ok, why = nodes.gate(s.registry, status, mine[0], None)
    assert not ok and why == "already active"


def test_an_older_database_gets_owners(tmp_path):
    """Versions from before owners: the node of the job that trained them, else the default group."""
    path = tmp_path / "server.sqlite"
    c = sqlite3.connect(path)
    c.executescript("""
CREATE TABLE versions (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL, horizon INTEGER NOT NULL,
  path TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, metrics TEXT NOT NULL, data TEXT NOT NULL,
  plot TEXT, job_id INTEGER, created REAL NOT NULL, UNIQUE(name, version));
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY, node_id INTEGER, kind TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
  percent REAL NOT NULL DEFAULT 0, stage TEXT NOT NULL DEFAULT 'queued', log TEXT NOT NULL DEFAULT '',
  result TEXT, error TEXT, cancel INTEGER NOT NULL DEFAULT 0, worker TEXT,
  created REAL NOT NULL, started REAL, finished REAL);
INSERT INTO jobs(id, node_id, kind, params, state, created) VALUES (5, 7, 'train', '{}', 'done', 1);
INSERT INTO versions VALUES (1, 'cnn-1', '20250101T000000Z', 'cnn', 1, '/x', 'ab', 1, '{}', '{}', NULL, 5, 1);
INSERT INTO versions VALUES (2, 'cnn-1', '20240101T000000Z', 'cnn', 1, '/y', 'cd', 1, '{}', '{}', NULL, NULL, 1);
""")
    c.close()
    db = Database(path)
    rows = db.all("SELECT id, owner FROM versions ORDER BY id")
    assert rows == [{"id": 1, "owner": "node:7"}, {"id": 2, "owner": group_owner("default")}]
    doc = {"name": "cnn-1", "version": "20250101T000000Z", "kind": "cnn", "horizon_steps": 1,
           "model": {"sha256": "ef", "bytes": 1}, "metrics": {}, "data": {}}
    db.add_version("node:8", doc, tmp_path, None, None)  # another house, the same version: allowed now
    assert db.one("SELECT count(*) AS n FROM versions")["n"] == 3
    assert "scheduled" in {r["name"] for r in db.all("PRAGMA table_info(jobs)")}
    Database(path)  # opening it again changes nothing
    assert db.one("SELECT count(*) AS n FROM versions")["n"] == 3


def test_the_overview_puts_failing_houses_first(app, logged_in):
    s = app.extensions["home_energy"]
    c = app.test_client()
    ids = {name: _node(c, name)["id"] for name in ("a-fine", "b-down", "c-failed", "d-refused")}
    up = {"reachable": True, "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"}, "models": {},
          "agent_version": "x", "last_forecast": None, "counters": {}}
    for name in ("a-fine", "c-failed", "d-refused"):
        s.db.set_node_status(ids[name], up)
    jid = s.db.add_job(ids["c-failed"], "train", {})
    s.db.job_update(jid, state="failed", error="boom", finished=time.time())
    s.db.add_push(ids["d-refused"], "cnn-1", "20260101T000000Z", False, "bad_signature", "refused")
    s.db.add_push(ids["a-fine"], "cnn-1", "20260101T000000Z", True, "active", "ok")
    rows = overview.rows(s.db)
    assert [r["name"] for r in rows] == ["b-down", "c-failed", "d-refused", "a-fine"]
    assert rows[0]["problems"] == ["unreachable"] and rows[1]["problems"] == ["last training failed"]
    assert rows[2]["problems"] == ["last push refused"] and rows[3]["problems"] == []
    page = logged_in.get("/").get_data(as_text=True)
    assert page.index("b-down") < page.index("c-failed") < page.index("d-refused") < page.index("a-fine")
    assert page.count('class="failing"') == 3
