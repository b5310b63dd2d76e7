"""What the page and the JSON API can do (one implementation for both); errors are ActionError with a status."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from server import jobs, nodes


class ActionError(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "bad_request"):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def _iso(value, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ActionError(f"{name}: {value!r} is not an ISO 8601 time (e.g. 2023-06-01T00:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def node_or_404(s, node_id) -> dict:
    node = s.db.one("SELECT * FROM nodes WHERE id=?", int(node_id))
    if node is None:
        raise ActionError(f"no node {node_id}", 404, "not_found")
    return node


def add_node(s, doc: dict) -> dict:
    name, url, token = (str(doc.get(k) or "").strip() for k in ("name", "api_url", "api_token"))
    if not name or not url or not token:
        raise ActionError("name, api_url and api_token are required")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ActionError(f"api_url {url!r} must be http(s)://host:port")
    influx = doc.get("influx") or {}
    if isinstance(influx, str):
        try:
            influx = json.loads(influx) if influx.strip() else {}
        except ValueError:
            raise ActionError("influx must be a JSON object") from None
    if influx and urlsplit(str(influx.get("url", ""))).scheme not in ("http", "https"):
        raise ActionError("influx.url must be http(s)://host:port")
    try:
        retrain = int(doc.get("retrain_days") or 0)
    except ValueError:
        raise ActionError("retrain_days must be a whole number") from None
    if s.db.one("SELECT id FROM nodes WHERE name=?", name):
        raise ActionError(f"a node named {name!r} exists already", 409, "exists")
    nid = s.db.run("INSERT INTO nodes(name, api_url, api_token, influx, retrain_days, created) VALUES (?,?,?,?,?,?)",
                   name, url.rstrip("/"), token, json.dumps(influx), retrain, time.time())
    node = s.db.one("SELECT * FROM nodes WHERE id=?", nid)
    nodes.poll(s.db, node)
    return nodes.public(s.db.one("SELECT * FROM nodes WHERE id=?", nid))


def pull(s, node_id, doc: dict) -> dict:
    node = node_or_404(s, node_id)
    start, end = _iso(doc.get("start"), "start"), _iso(doc.get("end"), "end")
    if end <= start:
        raise ActionError("invalid time range: end must be after start")
    if end > datetime.now(UTC).replace(microsecond=0) and (end - datetime.now(UTC)).days > 1:
        raise ActionError("invalid time range: end is in the future")
    if not json.loads(node["influx"] or "{}").get("url"):
        raise ActionError(f"node {node['name']} has no InfluxDB connection configured")
    params = {"start": start.isoformat(), "end": end.isoformat()}
    params.update({k: doc[k] for k in ("measurement", "field", "tags") if doc.get(k)})
    return _enqueue(s, node["id"], "pull", params)


def train(s, node_id, doc: dict) -> dict:
    node = node_or_404(s, node_id) if node_id is not None else None
    params: dict = {"auto_push": bool(doc.get("auto_push")), "quick": bool(doc.get("quick"))}
    if doc.get("until"):
        params["until"] = _iso(doc["until"], "until").strftime("%Y-%m-%dT%H:%M:%SZ")
    if doc.get("data"):
        data = doc["data"] if isinstance(doc["data"], list) else [doc["data"]]
        params["data"] = [str(p) for p in data]
    if doc.get("epochs"):
        params["epochs"] = int(doc["epochs"])
    return _enqueue(s, node["id"] if node else None, "train", params)


def _enqueue(s, node_id, kind: str, params: dict) -> dict:
    try:
        jid = jobs.enqueue(s.db, node_id, kind, params)
    except jobs.JobRefused as exc:
        raise ActionError(str(exc), 409, "busy") from None
    return jobs.public(s.db.one("SELECT * FROM jobs WHERE id=?", jid))


def cancel(s, job_id) -> dict:
    job = s.db.one("SELECT * FROM jobs WHERE id=?", int(job_id))
    if job is None:
        raise ActionError(f"no job {job_id}", 404, "not_found")
    if job["state"] == "queued":
        s.db.job_update(job["id"], state="cancelled", stage="cancelled", finished=time.time())
    elif job["state"] == "running":
        s.db.job_update(job["id"], cancel=1)
    else:
        raise ActionError(f"job {job_id} is {job['state']}: nothing to cancel", 409, "finished")
    return jobs.public(s.db.one("SELECT * FROM jobs WHERE id=?", job["id"]))


def push(s, node_id, doc: dict) -> dict:
    """Push a training run's versions (or given names) to a node. Without `override`, the gate decides."""
    node = node_or_404(s, node_id)
    version = str(doc.get("version") or "")
    names = doc.get("names") or ["cnn-1", "lstm-1", "cnn-96", "lstm-96"]
    if isinstance(names, str):
        names = [names]
    override = bool(doc.get("override"))
    rows = [s.registry.get(n, version) for n in names]
    if not version or not any(rows):
        raise ActionError(f"no registered version {version!r}", 404, "not_found")
    status = nodes.poll(s.db, node)
    if not status.get("reachable"):
        raise ActionError(f"node {node['name']} is unreachable: {status.get('error')}", 502, "unreachable")
    results = []
    series = None
    for row in rows:
        if row is None:
            continue
        if not override:
            if series is None:
                series = _recent_series(s, node)
            ok, why = nodes.gate(s.registry, status, row, series)
            if not ok:
                results.append({"ok": False, "name": row["name"], "version": version, "gate": why})
                continue
        results.append(nodes.push(s.db, s.registry, node, row["name"], version,
                                  allow_older=bool(doc.get("allow_older"))))
    nodes.poll(s.db, node)
    return {"node": node["name"], "results": results}


def _recent_series(s, node):
    last = s.db.one("SELECT result FROM jobs WHERE (node_id=? OR node_id IS NULL) AND state='done' AND "
                    "kind='pull' ORDER BY id DESC LIMIT 1", node["id"])
    if not last:
        return None
    from training.data import load

    return load([json.loads(last["result"])["file"]])


def rollback(s, node_id, doc: dict) -> dict:
    node = node_or_404(s, node_id)
    name = str(doc.get("name") or "")
    if name not in ("cnn-1", "lstm-1", "cnn-96", "lstm-96"):
        raise ActionError("name must be cnn-1, lstm-1, cnn-96 or lstm-96")
    from edge_agent.models.client import ApiError

    try:
        result = nodes.client(node).rollback(name)
    except ApiError as exc:
        raise ActionError(f"node {node['name']} refused the rollback ({exc.code}): {exc.message}",
                          502 if exc.status == 0 else 409, exc.code) from None
    nodes.poll(s.db, node)
    return result
