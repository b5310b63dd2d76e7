"""The model-management pages: an overview of all houses and one page per house with the same actions as the API,
as forms (session + CSRF token)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, request, url_for

from server import actions, nodes, overview, plots, timefmt, views
from server.auth import csrf_token, form_fields, login_required
from server.factory import current
from server.registry import node_owner, owner_node_id
from server.state import State
from shared.schema import BUNDLE_NAMES
from shared.verdict import SEED_REFERENCE

bp = Blueprint("pages", __name__)


@bp.get("/")
@login_required
def index():
    """All houses, failing ones first; the newest jobs; registering a node."""
    s = current()
    return render_template("index.html", csrf=csrf_token(), houses=overview.rows(s.db), jobs=s.db.recent_jobs(10),
                           names={n["id"]: n["name"] for n in s.db.nodes()}, public_key=s.keys.public_text,
                           bundle_names=BUNDLE_NAMES)


@bp.get("/nodes/<int:node_id>")
@login_required
def node(node_id):
    """One house: what it used and what it will use (the homeowner's view, loaded from its InfluxDB by the page),
    its state, its models with a verdict in words, their validation charts (the active versions' by default, or
    `?run=VERSION`), its jobs and pushes, and the actions — times in the house's zone."""
    s = current()
    try:
        row = actions.node_or_404(s, node_id)
    except actions.ActionError as exc:
        return exc.message, 404
    owner = node_owner(row["id"])
    public = nodes.public(row)
    status = public["status"] or {}
    tz = timefmt.house_tz(status)
    models = status.get("models") or {}
    active_sha = {n: (m.get("active") or {}).get("sha256") for n, m in models.items()}
    runs: dict[str, list] = {}
    for v in s.registry.list(48, owner):
        v["active"] = active_sha.get(v["name"]) == v["sha256"]
        runs.setdefault(v["version"], []).append(views.version_row(v, tz))
    quick = views.quick_runs(s.db, runs)
    house = next(h for h in overview.rows(s.db) if h["id"] == row["id"])
    names = {n["id"]: n["name"] for n in s.db.nodes()}
    run = request.args.get("run", "")
    return render_template(
        "node.html", csrf=csrf_token(), n=public, house=house, runs=runs, quick=quick, tz=tz,
        live=views.live_rows(_live_rows(s, house), status), plotly_js=_plotly_url(),
        plots=views.validation_plots(s.registry, owner, models, runs, run, quick, tz), run=run,
        seed=SEED_REFERENCE, bundle_names=BUNDLE_NAMES,
        rollback_names=[n for n in BUNDLE_NAMES if (models.get(n) or {}).get("previous")],
        jobs=s.db.recent_jobs(10, node_id=row["id"]), pushes=s.db.recent_pushes(8, row["id"]),
        sources=_seed_sources(s, owner, names), thresholds=views.THRESHOLDS)


def _plotly_url() -> str:
    return url_for("pages.plotly_js", v=plots.plotly_js()[0])


@bp.get("/vendor/plotly.min.js")
def plotly_js():
    """plotly.js from the installed `plotly` wheel: no CDN. Public (nothing secret), gzipped when the browser
    accepts it, cached by the browser for a year (the URL carries the version; private: the session cookie
    may ride along)."""
    version, body, gz = plots.plotly_js()
    zipped = "gzip" in request.headers.get("Accept-Encoding", "")
    resp = Response(gz if zipped else body, mimetype="text/javascript")
    if zipped:
        resp.headers["Content-Encoding"] = "gzip"
    resp.headers["Vary"] = "Accept-Encoding"
    resp.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    resp.headers["X-Plotly-Version"] = version
    return resp


def _validation(metrics: dict) -> dict:
    """A version's held-out validation figures, comparable with the live ones: MAE, skill against its best
    baseline (1 − MAE / baseline MAE, the agent's definition) and the P10–P90 coverage of its band."""
    val = (metrics or {}).get("validation") or {}
    mae = (val.get("int8") or {}).get("mae")
    base = min(((b["mae"], n) for n, b in (val.get("baselines") or {}).items() if b.get("mae")), default=None)
    cov = ((val.get("interval") or {}).get("calibration") or {}).get("coverage")
    return {"mae": mae, "baseline": base[1] if base else None, "baseline_mae": base[0] if base else None,
            "skill": 1 - mae / base[0] if mae is not None and base else None, "coverage": cov}


def _live_rows(s: State, house: dict) -> list[dict]:
    """Per bundle name: the active version, its live 7-day figures, its validation figures and the guard."""
    out = []
    for m in house["models"]:
        active = (((house.get("status") or {}).get("models") or {}).get(m["name"]) or {}).get("active")
        row = s.registry.by_sha(m["name"], active["sha256"]) if active else None
        out.append({"name": m["name"], "version": m["version"], "live": m.get("skill"),
                    "validation": _validation(row["metrics"]) if row else None, "guard": m.get("guard")})
    return out


@bp.get("/nodes/<int:node_id>/skill.json")
@login_required
def skill_chart(node_id):
    """The house's 7-day live skill and P10–P90 coverage over the last two weeks, as plotly figures, read from
    its InfluxDB (the agent's forecast_skill rows) when the page asks: the page does not wait for the house."""
    from server import skill
    from server.pull import influx_of, open_node_storage, safe_errors

    s = current()
    try:
        row = actions.node_or_404(s, node_id)
        influx = influx_of(row)
    except (actions.ActionError, ValueError) as exc:
        return jsonify(error=str(getattr(exc, "message", exc))), 404
    status = nodes.public(row)["status"] or {}
    versions: dict[str, list[str]] = {}
    for name, m in (status.get("models") or {}).items():
        versions[name] = [e["version"] for e in (m.get("active"), m.get("previous")) if e]
    try:
        st = safe_errors(influx["url"], open_node_storage, influx)
    except ValueError as exc:
        return jsonify(error=str(exc)), 502
    try:
        hist = safe_errors(influx["url"], skill.history, st, versions, datetime.now(UTC))
    except ValueError as exc:
        return jsonify(error=str(exc)), 502
    finally:
        st.close()
    house = next(h for h in overview.rows(s.db) if h["id"] == row["id"])
    validation = {r["name"]: (r["validation"] or {}).get("skill") for r in _live_rows(s, house)}
    tz = timefmt.house_tz(status)
    return jsonify(series=len(hist),
                   skill=plots.localize(plots.skill_over_time(
                       hist, validation, "Live skill, 7-day window (dashed: validation)"), tz),
                   coverage=plots.localize(plots.coverage_over_time(
                       hist, "P10–P90 coverage, 7-day window (dashed: nominal 80 %)"), tz))


@bp.get("/nodes/<int:node_id>/home.json")
@login_required
def home_view(node_id):
    """The homeowner's view (server/home.py): today's and the last 7 days' energy, the next 24 h; read from the
    house's InfluxDB when the page asks, as HTML (the figures) and plotly figures."""
    from server.pull import influx_of

    s = current()
    try:
        row = actions.node_or_404(s, node_id)
        influx = influx_of(row)
    except (actions.ActionError, ValueError) as exc:
        return jsonify(error=str(getattr(exc, "message", exc))), 404
    try:
        doc = views.home_view(row, influx, datetime.now(UTC))
    except ValueError as exc:
        return jsonify(error=str(exc)), 502
    return jsonify(html=render_template("home.html", **doc), energy=doc["energy_fig"], forecast=doc["forecast_fig"])


def _seed_sources(s: State, owner: str, names: dict[int, str]) -> list[tuple[str, str]]:
    """The newest runs of other houses and groups: (form value "owner/version", label)."""
    seen: dict[str, str] = {}
    for v in s.registry.list(400):
        if v["owner"] == owner:
            continue
        key = f"{v['owner']}/{v['version']}"
        nid = owner_node_id(v["owner"])
        seen.setdefault(key, f"{names.get(nid, v['owner']) if nid else v['owner']} — {v['version']}")
        if len(seen) >= 40:
            break
    return list(seen.items())


def _checkboxes(doc: dict, *names: str) -> dict:
    """A form's checkboxes as booleans (an unchecked box is not sent at all)."""
    return doc | {n: doc.get(n) == "on" for n in names}


def _back(node_id: int | None = None):
    return redirect(url_for("pages.node", node_id=node_id) if node_id else url_for("pages.index"))


def _done(fn, *args, ok: str, node_id: int | None = None):
    """Run an action, flash its outcome and go back to the house's page (or the overview)."""
    try:
        fn(current(), *args)
        flash(ok, "ok")
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return _back(node_id)


@bp.post("/nodes")
@login_required
def add_node():
    return _done(actions.add_node, form_fields(), ok="Node registered.")


@bp.post("/nodes/<int:node_id>/pull")
@login_required
def pull(node_id):
    return _done(actions.pull, node_id, form_fields(), ok="History pull started.", node_id=node_id)


@bp.post("/nodes/<int:node_id>/train")
@login_required
def train(node_id):
    return _done(actions.train, node_id, _checkboxes(form_fields(), "quick", "auto_push"), ok="Training started.",
                 node_id=node_id)


def _flash_pushes(result: dict) -> None:
    """One line per bundle: accepted by the node, or why not in short (the gate, or the node's answer); the
    details are folded in "Recent pushes"."""
    for r in result["results"]:
        flash(f"{r['name']} {r.get('version')}: " + ("accepted by the node" if r["ok"] else
              r.get("summary") or r.get("gate") or r.get("message") or "not installed"), "ok" if r["ok"] else "error")


@bp.post("/nodes/<int:node_id>/push")
@login_required
def push(node_id):
    try:
        _flash_pushes(actions.push(current(), node_id, _checkboxes(form_fields(), "override")))
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return _back(node_id)


@bp.post("/nodes/<int:node_id>/seed")
@login_required
def seed(node_id):
    """Another house's or a group's version on this house: only with the confirmation ticked."""
    doc = _checkboxes(form_fields(), "override", "confirm")
    run, confirmed = str(doc.pop("run", "")), doc.pop("confirm")
    owner, _, version = run.partition("/")
    if not confirmed:
        flash("Not seeded: tick the box to confirm that this house gets a model trained for another one.", "error")
        return _back(node_id)
    source = {"from_node": owner[5:]} if owner.startswith("node:") else {"from_group": owner[6:]}
    try:
        _flash_pushes(actions.seed(current(), node_id, doc | source | {"version": version}))
    except actions.ActionError as exc:
        flash(exc.message, "error")
    return _back(node_id)


@bp.post("/nodes/<int:node_id>/rollback")
@login_required
def rollback(node_id):
    return _done(actions.rollback, node_id, form_fields(), ok="Rolled back.", node_id=node_id)


@bp.post("/jobs/<int:job_id>/cancel")
@login_required
def cancel(job_id):
    s = current()
    try:
        job = actions.job_or_404(s, job_id)
    except actions.ActionError as exc:
        flash(exc.message, "error")
        return _back()
    back = job["node_id"] if request.form.get("back") == "node" else None
    return _done(actions.cancel, job_id, ok="Cancel requested.", node_id=back)
