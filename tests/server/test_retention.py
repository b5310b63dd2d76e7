"""Retention (server/retention.py): a house keeps its newest runs and every run a node uses; nothing outside the
registry is touched; 0 keeps everything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from server import retention
from server.registry import node_owner
from shared import manifest as mf
from shared.schema import BUNDLE_NAMES
from tests.helpers.server import AUTH


def _variant(seed_bundles: Path, out: Path, k: int) -> list[Path]:
    """The seed bundles with a model of their own (k bytes appended): runs with distinct model hashes."""
    dirs = []
    for name in BUNDLE_NAMES:
        d = out / f"run{k}" / name
        shutil.copytree(seed_bundles / name, d)
        model = (d / mf.MODEL_FILE).read_bytes() + b"\0" * (k + 1)
        (d / mf.MODEL_FILE).write_bytes(model)
        doc = mf.load(d)
        doc["model"] |= {"sha256": mf.sha256_bytes(model), "bytes": len(model)}
        (d / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))
        dirs.append(d)
    return dirs


def test_a_house_keeps_its_newest_runs_and_every_run_a_node_uses(app, seed_bundles, tmp_path):
    s = app.extensions["home_energy"]
    c = app.test_client()
    node = c.post("/api/v1/nodes", headers=AUTH, json={"name": "house-a", "api_url": "http://127.0.0.1:9",
                                                        "api_token": "t" * 20}).json
    other = c.post("/api/v1/nodes", headers=AUTH, json={"name": "house-b", "api_url": "http://127.0.0.1:9",
                                                         "api_token": "t" * 20}).json
    owner = node_owner(node["id"])
    runs = [s.registry.add_run(_variant(seed_bundles, tmp_path, k), owner, node_name="house-a") for k in range(14)]
    versions = [r[0]["version"] for r in runs]
    assert versions == sorted(versions) and len(set(versions)) == 14
    sha = {k: {r["name"]: r["sha256"] for r in runs[k]} for k in range(14)}
    # house-a has run 13's cnn-1 active and run 1's as previous; run 2's lstm-96 was seeded to house-b
    s.db.set_node_status(node["id"], {"reachable": True, "models": {
        "cnn-1": {"active": {"version": versions[13], "sha256": sha[13]["cnn-1"]},
                  "previous": {"version": versions[1], "sha256": sha[1]["cnn-1"]}}}})
    s.db.set_node_status(other["id"], {"reachable": True, "models": {
        "lstm-96": {"active": {"version": versions[2], "sha256": sha[2]["lstm-96"]}, "previous": None}}})
    outside = tmp_path / "not-the-registry"
    outside.mkdir()
    s.db.run("UPDATE versions SET path=? WHERE owner=? AND version=? AND name='cnn-96'", str(outside), owner,
             versions[0])
    assert retention.prune_runs(s.db, s.config.registry_dir, owner, 0)["runs"] == 0  # 0: keep everything
    gone = retention.prune_runs(s.db, s.config.registry_dir, owner, 10)
    assert gone["versions"] == [versions[3], versions[0]] and gone["runs"] == 2
    kept = {r["version"] for r in s.db.owner_runs(owner)}
    assert kept == set(versions) - {versions[0], versions[3]}
    for k in range(14):
        for row in runs[k]:
            on_disk = Path(row["path"]).exists()
            # (run 0's cnn-96 files stayed: its index row pointed elsewhere)
            assert on_disk == (k not in (0, 3) or (k, row["name"]) == (0, "cnn-96")), (k, row["name"])
    assert outside.exists()  # a path outside the registry is never deleted
    listed = c.get(f"/api/v1/nodes/{node['id']}/models", headers=AUTH).json["versions"]
    assert len(listed) == 12 * 4 and versions[0] not in {v["version"] for v in listed}
    assert json.loads(s.db.node(node["id"])["status"])["models"]["cnn-1"]["previous"]["version"] == versions[1]
