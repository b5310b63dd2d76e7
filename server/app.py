"""Flask app factory: the model-management page (login, CSRF) and the JSON API (token or session + CSRF)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from functools import wraps
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.security import check_password_hash, generate_password_hash

from server import actions, jobs, nodes
from server.config import ServerConfig, load_config
from server.db import Database
from server.files import private_dir
from server.registry import Registry
from server.validate import bad, flag, integer
from shared import signing

log = logging.getLogger(__name__)
SESSION_HOURS = 12
SEED_FIGURES = {"persistence_rmse": 0.079, "persistence_mae": 0.045, "seed_lstm_rmse": 0.12, "seed_cnn_rmse": 0.14}


@dataclass
class State:
    config: ServerConfig
    db: Database
    keys: signing.KeyPair
    registry: Registry
    dummy_hash: str = ""  # checked when the user name is wrong, so that both cases take as long


def build_state(config: ServerConfig) -> State:
    """Open the database, signing key and registry that the pages, the API and the job worker share."""
    private_dir(config.data_dir)
    db = Database(config.db_path)
    keys = signing.load_or_create_keypair(config.key_path)
    for d in (config.cache_dir, config.uploads_dir):
        private_dir(d)
    return State(config, db, keys, Registry(config.data_dir / "registry", db, keys))


def _dummy_hash(real: str) -> str:
    """A hash made like the admin's (same method and cost), of a random password nobody knows."""
    try:
        return generate_password_hash(secrets.token_hex(16), method=real.split("$", 1)[0])
    except (ValueError, TypeError, AttributeError):
        return generate_password_hash(secrets.token_hex(16))


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


def _sid_key(sid: str) -> str:
    """Sessions are stored by a hash of their id: the database alone does not give a usable cookie value."""
    return hashlib.sha256(sid.encode()).hexdigest()


def current_user() -> str | None:
    """The user of this request's session if the server still knows the session (logout revokes it)."""
    if "user" not in g:
        sid, user = session.get("sid"), None
        if isinstance(sid, str):
            row = state().db.one("SELECT user FROM sessions WHERE id=? AND expires>?", _sid_key(sid), time.time())
            user = row["user"] if row else None
        g.user = user
    return g.user


def _start_session(user: str) -> None:
    s, now = state(), time.time()
    sid = secrets.token_urlsafe(32)
    s.db.run("DELETE FROM sessions WHERE expires<=?", now)
    s.db.run("INSERT INTO sessions(id, user, created, expires) VALUES (?,?,?,?)", _sid_key(sid), user, now,
             now + SESSION_HOURS * 3600)
    session.clear()
    session["sid"], session["user"] = sid, user
    session.permanent = True
    g.user = user
    csrf_token()


def _end_session() -> None:
    sid = session.get("sid")
    if isinstance(sid, str):
        state().db.run("DELETE FROM sessions WHERE id=?", _sid_key(sid))
    session.clear()
    g.user = None


def api_auth(view):
    """Bearer token, or a logged-in session (+ CSRF header for anything that changes state)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if _token_ok():
            return view(*args, **kwargs)
        if not current_user():
            return jsonify(error={"code": "unauthorized", "message": "log in or send a Bearer token"}), 401
        if request.method not in ("GET", "HEAD") and not _csrf_ok():
            return jsonify(error={"code": "csrf", "message": "missing or wrong CSRF token"}), 403
        return view(*args, **kwargs)

    return wrapper


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user():
            return redirect(url_for("pages.login", next=request.path))
        if request.method == "POST" and not _csrf_ok():
            abort(403, "missing or wrong CSRF token: reload the page and try again")
        return view(*args, **kwargs)

    return wrapper


def _login_try(ip: str, account: str) -> int | None:
    """Record a login try, then count: None when this address or this account is over its limit in the window.

    Recording before counting, in one write transaction, means parallel tries cannot all pass the check; a refused
    try is removed again (it checked no password), so the rows count the passwords checked."""
    s = state()
    cfg = s.config
    now = time.time()
    c = s.db.connect()
    c.execute("BEGIN IMMEDIATE")
    try:
        c.execute("DELETE FROM login_tries WHERE at<?", (now - cfg.login_window_s,))
        tid = c.execute("INSERT INTO login_tries(ip, account, at) VALUES (?,?,?)", (ip, account, now)).lastrowid
        by_ip = c.execute("SELECT count(*) FROM login_tries WHERE ip=?", (ip,)).fetchone()[0]
        by_account = c.execute("SELECT count(*) FROM login_tries WHERE account=?", (account,)).fetchone()[0]
        over = by_ip > cfg.login_attempts or (cfg.login_account_attempts and by_account > cfg.login_account_attempts)
        if over:
            c.execute("DELETE FROM login_tries WHERE id=?", (tid,))
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    return None if over else tid


def safe_next(target) -> str:
    """Where to go after the login: a path on this site only ("/…"), never "//host", "/\\host" or a URL."""
    if not isinstance(target, str) or not target.startswith("/") or target[1:2] in ("/", "\\") \
            or "\\" in target or not target.isprintable() or any(c.isspace() for c in target) or len(target) > 500:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


# -- JSON API ----------------------------------------------------------------------------------------------------
api = Blueprint("api", __name__, url_prefix="/api/v1")


def body() -> dict:
    """The request's fields: a JSON object, or a form (without its CSRF token); anything else is a 400."""
    if request.is_json:
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
    return form()


def form() -> dict:
    doc = request.form.to_dict()
    doc.pop("csrf_token", None)
    return doc


@api.errorhandler(actions.ActionError)
def _action_error(exc: actions.ActionError):
    return jsonify(exc.json()), exc.status


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
    if flag(request.args, "refresh"):
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
    return jsonify(jobs.public(actions.job_or_404(state(), job_id)))


@api.post("/jobs/<int:job_id>/cancel")
@api_auth
def api_cancel(job_id):
    return jsonify(actions.cancel(state(), job_id, body()))


_models_cache: dict[tuple, bytes] = {}


@api.get("/models")
@api_auth
def api_models():
    """The version list; its JSON is cached per process until a version is added (one cheap query per request)."""
    s = state()
    limit = integer(request.args, "limit", 1, 1000, 200)
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
        user, password = request.form.get("username", "")[:200], request.form.get("password", "")[:4096]
        try_id = _login_try(ip, user.strip().lower()[:64])
        if try_id is None:
            flash("Too many failed logins: wait a few minutes.", "error")
            return render_template("login.html", csrf=csrf_token()), 429
        # the password is always hashed, also for an unknown user name, so the time does not tell which was wrong
        user_ok = hmac.compare_digest(user.encode(), s.config.admin_user.encode())
        password_ok = check_password_hash(s.config.admin_password_hash if user_ok else s.dummy_hash, password)
        if user_ok and password_ok:
            s.db.run("DELETE FROM login_tries WHERE id=?", try_id)  # only failures count
            _start_session(user)
            return redirect(safe_next(request.args.get("next")))
        log.warning("failed login for %r from %s", user[:64], ip)
        flash("Wrong user name or password.", "error")
        return render_template("login.html", csrf=csrf_token()), 401
    return render_template("login.html", csrf=csrf_token())


@pages.post("/logout")
@login_required
def logout():
    _end_session()
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
    return _page_action(actions.add_node, state(), form(), ok="Node registered.")


@pages.post("/nodes/<int:node_id>/pull")
@login_required
def page_pull(node_id):
    return _page_action(actions.pull, state(), node_id, form(), ok="History pull started.")


@pages.post("/nodes/<int:node_id>/train")
@login_required
def page_train(node_id):
    doc = form()
    doc["quick"] = doc.get("quick") == "on"
    doc["auto_push"] = doc.get("auto_push") == "on"
    return _page_action(actions.train, state(), node_id, doc, ok="Training started.")


@pages.post("/nodes/<int:node_id>/push")
@login_required
def page_push(node_id):
    doc = form()
    doc["override"] = doc.get("override") == "on"
    try:
        result = actions.push(state(), node_id, doc)
        for r in result["results"]:
            flash(f"{r['name']} {r.get('version')}: " + ("accepted by the node" if r["ok"] else
                  f"not pushed — {r.get('gate') or r.get('message')}"), "ok" if r["ok"] else "error")
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return redirect(url_for("pages.index"))


@pages.post("/nodes/<int:node_id>/rollback")
@login_required
def page_rollback(node_id):
    return _page_action(actions.rollback, state(), node_id, form(), ok="Rolled back.")


@pages.post("/jobs/<int:job_id>/cancel")
@login_required
def page_cancel(job_id):
    return _page_action(actions.cancel, state(), job_id, ok="Cancel requested.")


# -- factory -----------------------------------------------------------------------------------------------------
def create_app(config: ServerConfig | None = None, start_worker: bool = False) -> Flask:
    config = config or load_config()
    app = Flask(__name__)
    app.config.update(SECRET_KEY=config.secret_key, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=bool(config.session_cookie_secure),
                      PERMANENT_SESSION_LIFETIME=SESSION_HOURS * 3600, MAX_CONTENT_LENGTH=1 << 20)
    if config.trusted_proxies:  # only then: otherwise anyone could pick their address with X-Forwarded-For
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.trusted_proxies, x_proto=config.trusted_proxies)
    st = build_state(config)
    st.dummy_hash = _dummy_hash(config.admin_password_hash)
    app.extensions["home_energy"] = st
    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.jinja_env.filters["fromjson"] = json.loads
    app.context_processor(lambda: {"user": current_user()})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            code = (exc.name or "error").lower().replace(" ", "_")
            return jsonify(error={"code": code, "message": exc.description or exc.name}), exc.code
        return exc

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return jsonify(error={"code": "internal", "message": "internal error (see the server log)"}), 500
        return "Internal error (see the server log).", 500

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
