"""The model-management page: one overview and the same actions as the API, as forms (session + CSRF token)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for

from server import actions, nodes
from server.auth import csrf_token, form_fields, login_required
from server.state import current
from shared.schema import BUNDLE_NAMES
from training.train import SEED_REFERENCE

bp = Blueprint("pages", __name__)


@bp.get("/")
@login_required
def index():
    s = current()
    runs: dict[str, list] = {}
    for v in s.registry.list(48):
        runs.setdefault(v["version"], []).append(v)
    return render_template("index.html", csrf=csrf_token(), nodes=[nodes.public(n) for n in s.db.nodes()],
                           runs=runs, plots=s.db.newest_plots(), seed=SEED_REFERENCE, public_key=s.keys.public_text,
                           bundle_names=BUNDLE_NAMES, jobs=s.db.recent_jobs(10), pushes=s.db.recent_pushes(8))


def _checkboxes(doc: dict, *names: str) -> dict:
    """A form's checkboxes as booleans (an unchecked box is not sent at all)."""
    return doc | {n: doc.get(n) == "on" for n in names}


def _done(fn, *args, ok: str):
    """Run an action, flash its outcome and go back to the overview."""
    try:
        fn(current(), *args)
        flash(ok, "ok")
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return redirect(url_for("pages.index"))


@bp.post("/nodes")
@login_required
def add_node():
    return _done(actions.add_node, form_fields(), ok="Node registered.")


@bp.post("/nodes/<int:node_id>/pull")
@login_required
def pull(node_id):
    return _done(actions.pull, node_id, form_fields(), ok="History pull started.")


@bp.post("/nodes/<int:node_id>/train")
@login_required
def train(node_id):
    return _done(actions.train, node_id, _checkboxes(form_fields(), "quick", "auto_push"), ok="Training started.")


@bp.post("/nodes/<int:node_id>/push")
@login_required
def push(node_id):
    """One message per bundle: accepted by the node, or why not (the gate, or the node's answer)."""
    try:
        result = actions.push(current(), node_id, _checkboxes(form_fields(), "override"))
        for r in result["results"]:
            flash(f"{r['name']} {r.get('version')}: " + ("accepted by the node" if r["ok"] else
                  f"not pushed — {r.get('gate') or r.get('message')}"), "ok" if r["ok"] else "error")
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return redirect(url_for("pages.index"))


@bp.post("/nodes/<int:node_id>/rollback")
@login_required
def rollback(node_id):
    return _done(actions.rollback, node_id, form_fields(), ok="Rolled back.")


@bp.post("/jobs/<int:job_id>/cancel")
@login_required
def cancel(job_id):
    return _done(actions.cancel, job_id, ok="Cancel requested.")
