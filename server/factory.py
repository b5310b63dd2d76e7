"""The app factory: `create_app` only wires the parts together (as in Flask's tutorial): server.state (config,
database, keys, registry; a request finds it through `current`), server.auth (sessions, login, CSRF, token),
server.api (JSON API), server.pages (the page); the work is in server.actions, server.jobs, server.nodes and
server.registry, all SQL in server.db.
"""

from __future__ import annotations

import json
import logging

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from server import timefmt
from server.config import ServerConfig, load_config
from server.state import State, build_state
from shared.verdict import baseline_words

log = logging.getLogger(__name__)
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
EXTENSION = "home_energy"  # the State's key in app.extensions


def create_app(config: ServerConfig | None = None, start_worker: bool = False) -> Flask:
    """The app for `config` (default: load_config(), i.e. $SERVER_CONFIG); `start_worker` adds a job worker thread
    (development; under gunicorn the master starts `python -m server worker`)."""
    # imported here: the blueprints take `current` from this module
    from server import api, auth, pages
    from server.jobs import start_worker_thread

    config = config or load_config()
    app = Flask(__name__)
    app.config.update(SECRET_KEY=config.secret_key, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=bool(config.session_cookie_secure),
                      PERMANENT_SESSION_LIFETIME=auth.SESSION_HOURS * 3600, MAX_CONTENT_LENGTH=1 << 20)
    if config.trusted_proxies:  # only then: otherwise anyone could pick their address with X-Forwarded-For
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.trusted_proxies, x_proto=config.trusted_proxies)
    st = build_state(config)
    st.dummy_hash = auth.dummy_hash(config.admin_password_hash)
    app.extensions[EXTENSION] = st
    for bp in (auth.bp, api.bp, pages.bp):
        app.register_blueprint(bp)
    app.jinja_env.filters["fromjson"] = json.loads
    app.jinja_env.filters["datetime"] = timefmt.fmt  # the page's one time format; a house's page: in its zone
    app.jinja_env.filters["baseline_words"] = baseline_words
    app.context_processor(lambda: {"user": auth.current_user()})
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    app.after_request(_security_headers)
    if start_worker:
        start_worker_thread(st)
    log.info("server ready: data in %s, signing key %s", config.data_dir, st.keys.key_id)
    return app


def current() -> State:
    """The State of the app handling this request."""
    return current_app.extensions[EXTENSION]


def _http_error(exc: HTTPException):
    """JSON errors under /api/, Flask's pages elsewhere."""
    if request.path.startswith("/api/"):
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error={"code": code, "message": exc.description or exc.name}), exc.code
    return exc


def _internal_error(exc: Exception):
    """Anything unexpected: logged, answered without details."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    if request.path.startswith("/api/"):
        return jsonify(error={"code": "internal", "message": "internal error (see the server log)"}), 500
    return "Internal error (see the server log).", 500


def _security_headers(resp):
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Content-Security-Policy", CSP)
    return resp
