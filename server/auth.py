"""Who may do what: server-side sessions, the login form (rate-limited, constant-time), CSRF, the API token.

A login stores the sha256 of a random session id in SQLite (the signed cookie holds the id), so logout revokes a
copied cookie. Every state-changing request from a session needs the CSRF token; the JSON API also takes a
Bearer token. docs/server.md, "Security", lists what is checked and why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from server.factory import current

log = logging.getLogger(__name__)
SESSION_HOURS = 12
bp = Blueprint("auth", __name__)


# -- tokens --------------------------------------------------------------------------------------------------
def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_ok() -> bool:
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    return bool(session.get("csrf")) and hmac.compare_digest(given.encode(), session["csrf"].encode())


def form_fields() -> dict:
    """The posted form's fields without its CSRF token."""
    doc = request.form.to_dict()
    doc.pop("csrf_token", None)
    return doc


def token_ok() -> bool:
    token = current().config.api_token
    header = request.headers.get("Authorization", "")
    return bool(token) and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode())


# -- sessions ------------------------------------------------------------------------------------------------
def _sid_key(sid: str) -> str:
    """Sessions are stored by a hash of their id: the database alone does not give a usable cookie value."""
    return hashlib.sha256(sid.encode()).hexdigest()


def current_user() -> str | None:
    """The user of this request's session if the server still knows the session (logout revokes it)."""
    if "user" not in g:
        sid = session.get("sid")
        g.user = current().db.session_user(_sid_key(sid)) if isinstance(sid, str) else None
    return g.user


def start_session(user: str) -> None:
    sid = secrets.token_urlsafe(32)
    current().db.add_session(_sid_key(sid), user, SESSION_HOURS * 3600)
    session.clear()
    session["sid"], session["user"] = sid, user
    session.permanent = True
    g.user = user
    csrf_token()


def end_session() -> None:
    sid = session.get("sid")
    if isinstance(sid, str):
        current().db.delete_session(_sid_key(sid))
    session.clear()
    g.user = None


# -- guards --------------------------------------------------------------------------------------------------
def api_auth(view):
    """Bearer token, or a logged-in session (+ CSRF header for anything that changes state)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if token_ok():
            return view(*args, **kwargs)
        if not current_user():
            return jsonify(error={"code": "unauthorized", "message": "log in or send a Bearer token"}), 401
        if request.method not in ("GET", "HEAD") and not csrf_ok():
            return jsonify(error={"code": "csrf", "message": "missing or wrong CSRF token"}), 403
        return view(*args, **kwargs)

    return wrapper


def login_required(view):
    """A logged-in session (+ the form's CSRF token for a POST); otherwise the login page."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user():
            return redirect(url_for("auth.login", next=request.path))
        if request.method == "POST" and not csrf_ok():
            abort(403, "missing or wrong CSRF token: reload the page and try again")
        return view(*args, **kwargs)

    return wrapper


# -- login ---------------------------------------------------------------------------------------------------
def dummy_hash(real: str) -> str:
    """A hash made like the admin's (same method and cost), of a random password nobody knows."""
    try:
        return generate_password_hash(secrets.token_hex(16), method=real.split("$", 1)[0])
    except (ValueError, TypeError, AttributeError):
        return generate_password_hash(secrets.token_hex(16))


def password_ok(user: str, password: str) -> bool:
    """The password is always hashed, also for an unknown user name, so the time does not tell which was wrong."""
    s = current()
    user_ok = hmac.compare_digest(user.encode(), s.config.admin_user.encode())
    hashed = check_password_hash(s.config.admin_password_hash if user_ok else s.dummy_hash, password)
    return user_ok and hashed


def safe_next(target) -> str:
    """Where to go after the login: a path on this site only ("/…"), never "//host", "/\\host" or a URL."""
    if not isinstance(target, str) or not target.startswith("/") or target[1:2] in ("/", "\\") \
            or "\\" in target or not target.isprintable() or any(c.isspace() for c in target) or len(target) > 500:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def _login_page(message: str | None = None, status: int = 200):
    if message:
        flash(message, "error")
    return render_template("login.html", csrf=csrf_token()), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return _login_page()
    if not csrf_ok():
        return _login_page("The form expired: please try again.", 403)
    s, ip = current(), request.remote_addr or "?"
    user, password = request.form.get("username", "")[:200], request.form.get("password", "")[:4096]
    cfg = s.config
    try_id = s.db.login_try(ip, user.strip().lower()[:64], cfg.login_window_s, cfg.login_attempts,
                            cfg.login_account_attempts)
    if try_id is None:
        return _login_page("Too many failed logins: wait a few minutes.", 429)
    if password_ok(user, password):
        s.db.forget_login_try(try_id)  # only failures count
        start_session(user)
        return redirect(safe_next(request.args.get("next")))
    log.warning("failed login for %r from %s", user[:64], ip)
    return _login_page("Wrong user name or password.", 401)


@bp.post("/logout")
@login_required
def logout():
    end_session()
    return redirect(url_for("auth.login"))
