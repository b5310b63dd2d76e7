"""The JSON API under /api/v1 (Bearer token, or a session + CSRF header): thin views over server.actions."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request

from server import actions, jobs, nodes
from server.auth import api_auth, form_fields
from server.state import current
from server.validate import bad, flag, integer
from training.train import SEED_REFERENCE

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


@bp.get("/models")
@api_auth
def models():
    """The version list; its JSON is cached per process until a version is added (one cheap query per request)."""
    s = current()
    limit = integer(request.args, "limit", 1, 1000, 200)
    key = (str(s.config.db_path), limit, *s.db.versions_mark())
    cached = _models_cache.get(key)
    if cached is None:
        cached = json.dumps({"versions": s.registry.list(limit), "seed": SEED_REFERENCE}).encode()
        _models_cache.clear()
        _models_cache[key] = cached
    return current_app.response_class(cached, mimetype="application/json")


@bp.get("/models/<name>/<version>")
@api_auth
def model(name, version):
    row = current().registry.get(name, version)
    if row is None:
        raise actions.ActionError(f"no version {name} {version}", 404, "not_found")
    row.pop("path", None)
    return jsonify(row)
