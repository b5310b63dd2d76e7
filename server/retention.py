"""Retention: what the server keeps of a house's training runs and history pulls.

Unpruned, every weekly retrain adds about 190 KB of bundles and 185 KB of pulled history per house (docs/fleet.md:
~21 MB per house and year, 21 GB for 1,000 houses). After each training the owner (house or group) keeps its newest
`keep_runs` runs (default 10: more than the gate's fallback looks back, server/nodes.py EARLIER_CANDIDATES) and
every run with a model some node has active or as its previous one (by model hash, so a version seeded to another
house stays too); after each pull the house keeps its newest `keep_pulls` pulled files (default 3) and never the
one its latest pull job names, which the gate and the next training read (a pull's outdoor temperature file goes with
its pull). 0 keeps everything. Deleting a run removes its signed files and its index rows; jobs and pushes keep naming
it (the history of what ran).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from server.db import Database
from server.pull import is_temperature_file, temperature_file

log = logging.getLogger(__name__)


def protected_shas(db: Database) -> set[str]:
    """Model hashes some node reports as active or previous (its last known status)."""
    out: set[str] = set()
    for node in db.nodes():
        status = json.loads(node["status"]) if node.get("status") else {}
        for entry in (status.get("models") or {}).values():
            for which in ("active", "previous"):
                sha = (entry or {}).get(which) and entry[which].get("sha256")
                if isinstance(sha, str):
                    out.add(sha)
    return out


def prune_runs(db: Database, registry_root: Path, owner: str, keep: int) -> dict:
    """Delete the owner's runs beyond the newest `keep` that no node uses; what was deleted."""
    deleted = {"runs": 0, "versions": [], "bytes": 0}
    if keep <= 0:
        return deleted
    protected = protected_shas(db)
    root = Path(registry_root).resolve()
    for run in db.owner_runs(owner)[keep:]:
        if protected & set(run["shas"].split(",")):
            continue
        for path in run["paths"].split("\n"):
            p = Path(path).resolve()
            if p.is_relative_to(root):  # the index only ever points into the registry; never delete elsewhere
                shutil.rmtree(p, ignore_errors=True)
        db.delete_run(owner, run["version"])
        deleted["runs"] += 1
        deleted["versions"].append(run["version"])
        deleted["bytes"] += int(run["bytes"] or 0)
    if deleted["runs"]:
        log.info("retention: deleted %d older runs of %s (%s)", deleted["runs"], owner, ", ".join(deleted["versions"]))
    return deleted


def prune_pulls(db: Database, cache_dir: Path, node_id: int, keep: int) -> dict:
    """Delete the house's pulled history files beyond the newest `keep`, never the latest pull's file."""
    deleted = {"files": 0, "bytes": 0}
    folder = Path(cache_dir) / f"node-{int(node_id)}"
    if keep <= 0 or not folder.is_dir():
        return deleted
    last = db.last_pull(node_id)
    latest = Path(last["file"]).resolve() if last and last.get("file") else None
    files = sorted((f for f in folder.glob("*.csv") if not is_temperature_file(f)), key=lambda p: p.stat().st_mtime,
                   reverse=True)
    for f in files[keep:]:
        if f.resolve() == latest:
            continue
        for part in (f, temperature_file(f)):  # a pull's outdoor temperature goes with it
            if part.exists():
                size = part.stat().st_size
                part.unlink(missing_ok=True)
                deleted["bytes"] += size
        deleted["files"] += 1
    return deleted
