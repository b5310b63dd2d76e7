"""Flask app factory: the model-management page (login, CSRF) and the JSON API (token or session + CSRF)."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from functools import wraps

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash

from server import actions, jobs, nodes
from server.config import ServerConfig, load_config
from server.db import Database
from server.registry import Registry
from shared import signing

log = logging.getLogger(__name__)
SEED_FIGURES = {"persistence_rmse": 0.079, "persistence_mae": 0.045, "seed_lstm_rmse": 0.12, "seed_cnn_rmse": 0.14}


@dataclass
class State:
    config: ServerConfig
    db: Database
    keys: signing.KeyPair
    registry: Registry


def build_state(config: ServerConfig) -> State:
    """Open the database, signing key and registry that the pages, the API and the job worker share."""
    db = Database(config.db_path)
    keys = signing.load_or_create_keypair(config.key_path)
    return State(config, db, keys, Registry(config.data_dir / "registry", db, keys))


def state() -> State:
    return current_app.extensions["home_energy"]


# -- security --------------------------------------------------------------------------------------------------
def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok() -> bool:
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    return bool(session.get("csrf")) and hmac.compare_digest(given.encode(), session["csrf"].encode())


def _token_ok() -> bool:
    token = state().config.api_token
    header = request.headers.get("Authorization", "")
    return bool(token) and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode())


def api_auth(view):
    """Bearer token, or a logged-in session (+ CSRF header for anything that changes state)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if _token_ok():
            return view(*args, **kwargs)
        if not session.get("user"):
            return jsonify(error={"code": "unauthorized", "message": "log in or send a Bearer token"}), 401
        if request.method not in ("GET", "HEAD") and not _csrf_ok():
            return jsonify(error={"code": "csrf", "message": "missing or wrong CSRF token"}), 403
        return view(*args, **kwargs)

    return wrapper


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not session.get("user"):
            return redirect(url_for("pages.login", next=request.path))
        if request.method == "POST" and not _csrf_ok():
            abort(403, "missing or wrong CSRF token: reload the page and try again")
        return view(*args, **kwargs)

    return wrapper


def _rate_limited(ip: str) -> bool:
    s = state()
    since = time.time() - s.config.login_window_s
    s.db.run("DELETE FROM login_attempts WHERE at < ?", since)
    n = s.db.one("SELECT count(*) AS n FROM login_attempts WHERE ip=?", ip)["n"]
    return n >= s.config.login_attempts


# -- JSON API ----------------------------------------------------------------------------------------------------
api = Blueprint("api", __name__, url_prefix="/api/v1")


def body() -> dict:
    doc = request.get_json(silent=True)
    return doc if isinstance(doc, dict) else request.form.to_dict()


@api.errorhandler(actions.ActionError)
def _action_error(exc: actions.ActionError):
    return jsonify(error={"code": exc.code, "message": exc.message}), exc.status


@api.get("/status")
@api_auth
def api_status():
    s = state()
    return jsonify(public_key=s.keys.public_text, key_id=s.keys.key_id,
                   nodes=s.db.one("SELECT count(*) AS n FROM nodes")["n"],
                   versions=s.db.one("SELECT count(*) AS n FROM versions")["n"],
                   jobs_running=s.db.one("SELECT count(*) AS n FROM jobs WHERE state='running'")["n"])


@api.get("/nodes")
@api_auth
def api_nodes():
    return jsonify(nodes=[nodes.public(n) for n in state().db.all("SELECT * FROM nodes ORDER BY name")])


@api.post("/nodes")
@api_auth
def api_add_node():
    return jsonify(actions.add_node(state(), body())), 201


@api.get("/nodes/<int:node_id>")
@api_auth
def api_node(node_id):
    s = state()
    node = actions.node_or_404(s, node_id)
    if request.args.get("refresh"):
        nodes.poll(s.db, node)
        node = actions.node_or_404(s, node_id)
    return jsonify(nodes.public(node))


@api.post("/nodes/<int:node_id>/pull")
@api_auth
def api_pull(node_id):
    return jsonify(actions.pull(state(), node_id, body())), 202


@api.post("/nodes/<int:node_id>/train")
@api_auth
def api_train_node(node_id):
    return jsonify(actions.train(state(), node_id, body())), 202


@api.post("/train")
@api_auth
def api_train():
    return jsonify(actions.train(state(), None, body())), 202


@api.post("/nodes/<int:node_id>/push")
@api_auth
def api_push(node_id):
    return jsonify(actions.push(state(), node_id, body()))


@api.post("/nodes/<int:node_id>/rollback")
@api_auth
def api_rollback(node_id):
    return jsonify(actions.rollback(state(), node_id, body()))


@api.get("/jobs")
@api_auth
def api_jobs():
    rows = state().db.all("SELECT id, node_id, kind, state, percent, stage, error, created, started, finished "
                          "FROM jobs ORDER BY id DESC LIMIT 50")
    return jsonify(jobs=rows)


@api.get("/jobs/<int:job_id>")
@api_auth
def api_job(job_id):
    job = state().db.one("SELECT * FROM jobs WHERE id=?", job_id)
    if job is None:
        raise actions.ActionError(f"no job {job_id}", 404, "not_found")
    return jsonify(jobs.public(job))


@api.post("/jobs/<int:job_id>/cancel")
@api_auth
def api_cancel(job_id):
    return jsonify(actions.cancel(state(), job_id))


_models_cache: dict[tuple, bytes] = {}


@api.get("/models")
@api_auth
def api_models():
    """The version list; its JSON is cached per process until a version is added (one cheap query per request)."""
    s = state()
    limit = int(request.args.get("limit", 200))
    mark = s.db.one("SELECT count(*) AS n, max(id) AS last, max(created) AS t FROM versions")
    key = (str(s.config.db_path), limit, mark["n"], mark["last"], mark["t"])
    body = _models_cache.get(key)
    if body is None:
        body = json.dumps({"versions": s.registry.list(limit), "seed": SEED_FIGURES}).encode()
        _models_cache.clear()
        _models_cache[key] = body
    return current_app.response_class(body, mimetype="application/json")


@api.get("/models/<name>/<version>")
@api_auth
def api_model(name, version):
    row = state().registry.get(name, version)
    if row is None:
        raise actions.ActionError(f"no version {name} {version}", 404, "not_found")
    row.pop("path", None)
    return jsonify(row)


# -- pages -------------------------------------------------------------------------------------------------------
pages = Blueprint("pages", __name__)


@pages.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        s = state()
        ip = request.remote_addr or "?"
        if not _csrf_ok():
            flash("The form expired: please try again.", "error")
            return render_template("login.html", csrf=csrf_token()), 403
        if _rate_limited(ip):
            flash("Too many failed logins: wait a few minutes.", "error")
            return render_template("login.html", csrf=csrf_token()), 429
        user, password = request.form.get("username", ""), request.form.get("password", "")
        if hmac.compare_digest(user.encode(), s.config.admin_user.encode()) and \
                check_password_hash(s.config.admin_password_hash, password):
            session.clear()
            session["user"] = user
            session.permanent = True
            csrf_token()
            return redirect(request.args.get("next") if str(request.args.get("next", "")).startswith("/") else "/")
        s.db.run("INSERT INTO login_attempts(ip, at) VALUES (?, ?)", ip, time.time())
        log.warning("failed login for %r from %s", user, ip)
        flash("Wrong user name or password.", "error")
        return render_template("login.html", csrf=csrf_token()), 401
    return render_template("login.html", csrf=csrf_token())


@pages.post("/logout")
@login_required
def logout():
    session.clear()
    return redirect(url_for("pages.login"))


@pages.get("/")
@login_required
def index():
    s = state()
    versions = s.registry.list(48)
    runs: dict[str, list] = {}
    for v in versions:
        runs.setdefault(v["version"], []).append(v)
    plots = {(r["name"], r["version"]): r["plot"] for r in s.db.all(
        "SELECT name, version, plot FROM versions WHERE version = (SELECT max(version) FROM versions)")}
    return render_template("index.html", csrf=csrf_token(), nodes=[nodes.public(n) for n in
                                                                   s.db.all("SELECT * FROM nodes ORDER BY name")],
                           runs=runs, plots=plots, seed=SEED_FIGURES, public_key=s.keys.public_text,
                           jobs=s.db.all("SELECT * FROM jobs ORDER BY id DESC LIMIT 10"),
                           pushes=s.db.all("SELECT p.*, n.name AS node FROM pushes p JOIN nodes n ON n.id=p.node_id "
                                           "ORDER BY p.id DESC LIMIT 8"))


def _page_action(fn, *args, ok: str):
    try:
        fn(*args)
        flash(ok, "ok")
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return redirect(url_for("pages.index"))


@pages.post("/nodes")
@login_required
def page_add_node():
    return _page_action(actions.add_node, state(), request.form.to_dict(), ok="Node registered.")


@pages.post("/nodes/<int:node_id>/pull")
@login_required
def page_pull(node_id):
    return _page_action(actions.pull, state(), node_id, request.form.to_dict(), ok="History pull started.")


@pages.post("/nodes/<int:node_id>/train")
@login_required
def page_train(node_id):
    form = request.form.to_dict()
    form["quick"] = form.get("quick") == "on"
    form["auto_push"] = form.get("auto_push") == "on"
    return _page_action(actions.train, state(), node_id, form, ok="Training started.")


@pages.post("/nodes/<int:node_id>/push")
@login_required
def page_push(node_id):
    form = request.form.to_dict()
    form["override"] = form.get("override") == "on"
    try:
        result = actions.push(state(), node_id, form)
        for r in result["results"]:
            flash(f"{r['name']} {r.get('version')}: " + ("accepted by the node" if r["ok"] else
                  f"not pushed — {r.get('gate') or r.get('message')}"), "ok" if r["ok"] else "error")
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return redirect(url_for("pages.index"))


@pages.post("/nodes/<int:node_id>/rollback")
@login_required
def page_rollback(node_id):
    return _page_action(actions.rollback, state(), node_id, request.form.to_dict(), ok="Rolled back.")


@pages.post("/jobs/<int:job_id>/cancel")
@login_required
def page_cancel(job_id):
    return _page_action(actions.cancel, state(), job_id, ok="Cancel requested.")


# -- factory -----------------------------------------------------------------------------------------------------
def create_app(config: ServerConfig | None = None, start_worker: bool = False) -> Flask:
    config = config or load_config()
    app = Flask(__name__)
    app.config.update(SECRET_KEY=config.secret_key, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=bool(config.session_cookie_secure), PERMANENT_SESSION_LIFETIME=12 * 3600,
                      MAX_CONTENT_LENGTH=1 << 20)
    st = build_state(config)
    app.extensions["home_energy"] = st
    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.jinja_env.filters["fromjson"] = json.loads

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                                           "style-src 'self' 'unsafe-inline'")
        return resp

    if start_worker:
        start_worker_thread(st)
    log.info("server ready: data in %s, signing key %s", config.data_dir, st.keys.key_id)
    return app


def start_worker_thread(st: State) -> jobs.Worker:
    worker = jobs.Worker(st)
    threading.Thread(target=worker.run_forever, name="job-worker", daemon=True).start()
    return worker
