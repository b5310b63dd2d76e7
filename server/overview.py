"""The overview of all houses: one row per node with what an operator checks first, failing houses on top.

A house is failing when its agent does not answer, its last training failed, its last push was refused (by the
agent: a version the gate held back is recorded as the last push, but is no fault) or the
agent's guard keeps one of its active models in the shadow (it lost to a naive baseline, which serves instead). Each
active model says which house (or group) it was trained for — found by its sha256 in the registry, since the same
version string can belong to several houses — and its live skill when the worker has measured one
(server.skill).
"""

from __future__ import annotations

import json
import time

from server.config import NotifyConfig
from server.db import Database
from server.notify import house_alerts
from server.registry import owner_node_id
from shared.schema import BUNDLE_NAMES


def _load(text: str | None):
    return json.loads(text) if text else None


def problems(row: dict, notify: NotifyConfig | None = None, now: float | None = None) -> list[str]:
    """Why a house needs attention (empty: it is fine): the checks below, then what the notifications report
    (server/notify.py: not forecasting, backup stale, the agent's own problems)."""
    out = []
    status = row["status"] or {}
    if not status.get("reachable"):
        out.append("unreachable" if row["status"] else "not polled yet")
    if (row["last_train"] or {}).get("state") == "failed":
        out.append("last training failed")
    if row["last_push"] and not row["last_push"]["ok"] and row["last_push"].get("code") != "gate":
        out.append("last push refused")  # by the agent; one the gate held back is no fault of the house
    shadow = [m["name"] for m in row.get("models") or [] if (m.get("guard") or {}).get("state") == "shadow"]
    if shadow:
        out.append(f"{', '.join(shadow)} in the shadow (the baseline serves)")
    for code, message in house_alerts(row, notify or NotifyConfig(), now or time.time()).items():
        if code in ("not_reporting", "model_shadow"):  # said above
            continue
        out.append(f"{code.replace('_', ' ')}: {message}")
    return out


def rows(db: Database) -> list[dict]:
    """Every node, decoded, with `models` (per bundle: active version, trained for, live skill) and `problems`;
    failing houses first, then by name."""
    nodes = db.overview()
    names = {n["id"]: n["name"] for n in nodes}
    for n in nodes:
        for key in ("status", "skill", "last_train", "last_push"):
            n[key] = _load(n[key])
    shas = [m["active"]["sha256"] for n in nodes for m in ((n["status"] or {}).get("models") or {}).values()
            if m.get("active")]
    owners = db.owners_by_sha(shas)
    for n in nodes:
        models = (n["status"] or {}).get("models") or {}
        guard = ((n["status"] or {}).get("guard") or {}).get("models") or {}
        n["models"] = []
        for name in BUNDLE_NAMES:
            active = (models.get(name) or {}).get("active")
            if not active:
                n["models"].append({"name": name, "version": None})
                continue
            owner = owners.get(active["sha256"])
            g = guard.get(name)
            n["models"].append({"name": name, "version": active["version"], "owner": owner,
                                "guard": g if g and g.get("version") in (None, active["version"]) else None,
                                "trained_for": _label(owner, names), "own": owner == f"node:{n['id']}",
                                "skill": (n["skill"] or {}).get(name) if (n["skill"] or {}).get(name, {}).get(
                                    "version") == active["version"] else None})
        n["problems"] = problems(n)
    return sorted(nodes, key=lambda n: (not n["problems"], n["name"]))


def _label(owner: str | None, names: dict[int, str]) -> str:
    if owner is None:
        return "not in this registry"
    node_id = owner_node_id(owner)
    if node_id is not None:
        return names.get(node_id, owner)
    return owner
