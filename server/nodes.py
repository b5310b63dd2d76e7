"""Edge nodes: status from the agent's API, pushes with the promotion gate, rollbacks."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from edge_agent.models.client import AgentClient, ApiError
from server.db import Database
from server.registry import Registry
from shared.schema import SLOT_NS
from shared.series import SlotSeries

log = logging.getLogger(__name__)
GATE_DAYS = 7


def client(node: dict) -> AgentClient:
    return AgentClient(node["api_url"], node["api_token"], timeout=30)


def public(node: dict) -> dict:
    """A node without its secrets, with its last known status decoded."""
    out = {k: v for k, v in node.items() if k not in ("api_token", "influx")}
    influx = json.loads(node.get("influx") or "{}")
    out["influx"] = {k: v for k, v in influx.items() if k not in ("password", "token")}
    out["status"] = json.loads(node["status"]) if node.get("status") else None
    return out


def poll(db: Database, node: dict) -> dict:
    """Ask the agent for its status and remember it (reachable or not)."""
    try:
        st = client(node).status()
        status = {"reachable": True, **st}
    except ApiError as exc:
        status = {"reachable": False, "error": exc.message, "code": exc.code}
    db.run("UPDATE nodes SET status=?, status_at=? WHERE id=?", json.dumps(status), time.time(), node["id"])
    return status


def recent_mae(bundle_path: Path, series: SlotSeries, days: int = GATE_DAYS) -> float:
    """MAE of a bundle on the last `days` of the series (issue times as in the backtest)."""
    from edge_agent.inference import LoadedModel
    from training.backtest import issue_times_for

    model = LoadedModel.from_dir(bundle_path)
    h = model.spec.horizon
    end = series.last_ns - h * SLOT_NS + SLOT_NS
    errs = []
    for t in issue_times_for(h, end - days * 96 * SLOT_NS, end).tolist():
        f = model.predict(series, t)
        actual = series.window(t + h * SLOT_NS, h)
        ok = np.isfinite(actual)
        if f.complete and ok.any():
            errs.append(np.abs(f.values[ok] - actual[ok]))
    return float(np.mean(np.concatenate(errs))) if errs else float("inf")


def gate(registry: Registry, node_status: dict | None, new: dict, series: SlotSeries | None) -> tuple[bool, str]:
    """Automatic pushes only: the new version must beat the node's active one on the same recent data."""
    active = ((node_status or {}).get("models") or {}).get(new["name"], {}).get("active")
    if not active:
        return True, "the node has no active model for this name"
    if active["version"] == new["version"]:
        return False, "already active"
    current = registry.get(new["name"], active["version"])
    if current is None:
        return False, f"the active version {active['version']} is not in this registry: push manually to replace it"
    if series is None:
        return False, "no recent data to compare on: push manually"
    mae_new, mae_cur = recent_mae(Path(new["path"]), series), recent_mae(Path(current["path"]), series)
    if mae_new <= mae_cur:
        return True, f"MAE on the last {GATE_DAYS} days {mae_new:.4f} ≤ active {mae_cur:.4f}"
    return False, f"MAE on the last {GATE_DAYS} days {mae_new:.4f} > active {mae_cur:.4f}: not pushed"


def push(db: Database, registry: Registry, node: dict, name: str, version: str, allow_older: bool = False) -> dict:
    """Push one registered version; the agent's verdict (accepted or its error code/message) is recorded."""
    from edge_agent.models.api import bundle_archive

    row = registry.get(name, version)
    if row is None:
        raise LookupError(f"no version {name} {version} in the registry")
    try:
        result = client(node).push_archive(bundle_archive(Path(row["path"])), allow_older=allow_older)
        ok, code, message = True, result.get("status"), f"{name} {version} {result.get('status')}"
    except ApiError as exc:
        ok, code, message, result = False, exc.code, exc.message, None
    db.run("INSERT INTO pushes(node_id, name, version, ok, code, message, created) VALUES (?,?,?,?,?,?,?)",
           node["id"], name, version, int(ok), code, message, time.time())
    log.info("push %s %s to %s: %s (%s)", name, version, node["name"], "accepted" if ok else "rejected", message)
    return {"ok": ok, "name": name, "version": version, "code": code, "message": message}
