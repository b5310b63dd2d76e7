"""The JSON API under /api/v1 (Bearer token, or a session + CSRF header): thin views over server.actions."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request

from server import actions, jobs, nodes
from server.auth import api_auth, form_fields
from server.factory import current
from server.registry import group_owner, node_owner
from server.state import State
from server.validate import bad, flag, integer
from shared.verdict import SEED_REFERENCE

bp = Blueprint("api", __name__, url_prefix="/api/v1")
_models_cache: dict[tuple, bytes] = {}


def body() -> dict:
    """The request's fields: a JSON object, or a form (without its CSRF token); anything else is a 400."""
    if not request.is_json:
        return form_fields()
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise bad("body", "is not valid JSON") from None
    if not isinstance(doc, dict):
        raise bad("body", f"must be a JSON object, got {type(doc).__name__}")
    return doc


@bp.errorhandler(actions.ActionError)
def _action_error(exc: actions.ActionError):
    return jsonify(exc.json()), exc.status


@bp.get("/status")
@api_auth
def status():
    s = current()
    return jsonify(public_key=s.keys.public_text, key_id=s.keys.key_id, **s.db.counts())


@bp.get("/nodes")
@api_auth
def node_list():
    return jsonify(nodes=[nodes.public(n) for n in current().db.nodes()])


@bp.post("/nodes")
@api_auth
def add_node():
    return jsonify(actions.add_node(current(), body())), 201


@bp.get("/nodes/<int:node_id>")
@api_auth
def node(node_id):
    s = current()
    row = actions.node_or_404(s, node_id)
    if flag(request.args, "refresh"):
        nodes.poll(s.db, row)
        row = actions.node_or_404(s, node_id)
    return jsonify(nodes.public(row))


@bp.post("/nodes/<int:node_id>/pull")
@api_auth
def pull(node_id):
    return jsonify(actions.pull(current(), node_id, body())), 202


@bp.post("/nodes/<int:node_id>/train")
@api_auth
def train_node(node_id):
    return jsonify(actions.train(current(), node_id, body())), 202


@bp.post("/train")
@api_auth
def train():
    return jsonify(actions.train(current(), None, body())), 202


@bp.post("/nodes/<int:node_id>/push")
@api_auth
def push(node_id):
    return jsonify(actions.push(current(), node_id, body()))


@bp.post("/nodes/<int:node_id>/seed")
@api_auth
def seed(node_id):
    return jsonify(actions.seed(current(), node_id, body()))


@bp.post("/nodes/<int:node_id>/rollback")
@api_auth
def rollback(node_id):
    return jsonify(actions.rollback(current(), node_id, body()))


@bp.get("/jobs")
@api_auth
def job_list():
    return jsonify(jobs=current().db.recent_jobs(50, summary=True))


@bp.get("/jobs/<int:job_id>")
@api_auth
def job(job_id):
    return jsonify(jobs.public(actions.job_or_404(current(), job_id)))


@bp.post("/jobs/<int:job_id>/cancel")
@api_auth
def cancel(job_id):
    return jsonify(actions.cancel(current(), job_id, body()))


def _owner_arg(s: State) -> str | None:
    """?node=<id> or ?group=<name>: whose versions (None: everyone's)."""
    node_id, group = integer(request.args, "node", 1, actions.MAX_ID), request.args.get("group")
    if node_id is not None and group:
        raise bad("node", "give node or group, not both")
    if node_id is not None:
        return node_owner(actions.node_or_404(s, node_id)["id"])
    if group:
        try:
            return group_owner(group)
        except ValueError as exc:
            raise bad("group", str(exc)) from None
    return None


def _versions_json(s: State, limit: int, owner: str | None) -> bytes:
    """The version list; its JSON is cached per process until a version is added (one cheap query per request)."""
    key = (str(s.config.db_path), limit, owner, *s.db.versions_mark())
    cached = _models_cache.get(key)
    if cached is None:
        cached = json.dumps({"versions": s.registry.list(limit, owner), "seed": SEED_REFERENCE}).encode()
        if len(_models_cache) > 64:
            _models_cache.clear()
        _models_cache[key] = cached
    return cached


@bp.get("/models")
@api_auth
def models():
    """Every owner's versions, or one node's (?node=ID) or group's (?group=NAME)."""
    s = current()
    limit = integer(request.args, "limit", 1, 1000, 200)
    return current_app.response_class(_versions_json(s, limit, _owner_arg(s)), mimetype="application/json")


@bp.get("/nodes/<int:node_id>/models")
@api_auth
def node_models(node_id):
    """The versions trained for this node (its registry)."""
    s = current()
    owner = node_owner(actions.node_or_404(s, node_id)["id"])
    limit = integer(request.args, "limit", 1, 1000, 200)
    return current_app.response_class(_versions_json(s, limit, owner), mimetype="application/json")


@bp.get("/models/<name>/<version>")
@api_auth
def model(name, version):
    """One bundle; ?node= or ?group= says whose when several houses have a version of that name and time."""
    s = current()
    owner = _owner_arg(s)
    rows = [r for r in ([s.registry.get(owner, name, version)] if owner else s.registry.named(name, version)) if r]
    if not rows:
        raise actions.ActionError(f"no version {name} {version}", 404, "not_found")
    if len(rows) > 1:
        raise actions.ActionError(f"{name} {version} exists for {', '.join(r['owner'] for r in rows)}: add "
                                  f"?node=ID or ?group=NAME", 409, "ambiguous")
    row = rows[0]
    row.pop("path", None)
    return jsonify(row)
