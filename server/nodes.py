"""Edge nodes: status from the agent's API, pushes with the promotion gate, rollbacks."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from server.db import Database
from server.registry import Registry
from shared.agent_client import AgentClient, ApiError
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries, iso, parse_time_ns

log = logging.getLogger(__name__)
GATE_DAYS = 7  # the gate compares on at most the last 7 days after both versions' training ends
MIN_UNSEEN_DAYS = {1: 1, 96: 2}  # horizon → days after both training ends needed before an automatic push


def client(node: dict) -> AgentClient:
    """The node's agent API; an https URL is verified against the node's `ca_file`, else the system CAs."""
    return AgentClient(node["api_url"], node["api_token"], timeout=30, ca_file=node.get("ca_file") or None)


def public(node: dict) -> dict:
    """A node without its secrets, with its last known status decoded."""
    out = {k: v for k, v in node.items() if k not in ("api_token", "influx")}
    influx = json.loads(node.get("influx") or "{}")
    out["influx"] = {k: v for k, v in influx.items() if k not in ("password", "token")}
    out["status"] = json.loads(node["status"]) if node.get("status") else None
    return out


# -- the agent's status: only the documented fields, checked, are stored and shown ------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_VERSION = re.compile(r"\d{8}T\d{6}Z")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COUNTER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class BadStatus(ValueError):
    """The answer does not have the shape of the agent's documented status (architecture.md)."""


def _short(value, max_len: int = 64) -> str:
    if not isinstance(value, str) or len(value) > max_len or _CONTROL.search(value):
        raise BadStatus("not a short string")
    return value


def _version_entry(entry) -> dict | None:
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("version"), str) or \
            not _VERSION.fullmatch(entry["version"]) or not _SHA256.fullmatch(_short(entry.get("sha256"))):
        raise BadStatus("bad model version entry")
    out = {"version": entry["version"], "sha256": entry["sha256"], "activated_at": _short(entry.get("activated_at"), 40)}
    if entry.get("node") is not None:  # the node the version was trained for (its manifest's data.node)
        out["node"] = _short(entry["node"])
    return out


_GUARD_STATES = ("learning", "serving", "shadow")


def _text_or_none(value, max_len: int = 64) -> str | None:
    """A short string, or None for anything else (the guard part is shown, never trusted)."""
    return value if isinstance(value, str) and len(value) <= max_len and not _CONTROL.search(value) else None


def _finite_or_none(value) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _count_or_none(value) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**7
    return int(value) if ok else None


def clean_guard(guard) -> dict | None:
    """The documented part of the agent's `guard` status (docs/edge-models.md) the page shows: per model its
    state, version, since, reason, skill and the slots scored of the slots it needs (while learning); per horizon
    what was served and why. Entries of another shape are
    dropped; reasons are one bounded line."""
    if not isinstance(guard, dict):
        return None
    models = {}
    for name, m in list((guard.get("models") if isinstance(guard.get("models"), dict) else {}).items())[:16]:
        if isinstance(name, str) and _MODEL_NAME.fullmatch(name) and isinstance(m, dict) and \
                m.get("state") in _GUARD_STATES:
            reason = m.get("reason")
            models[name] = {"state": m["state"], "version": _text_or_none(m.get("version")),
                            "since": _text_or_none(m.get("since"), 40), "skill": _finite_or_none(m.get("skill")),
                            "reason": safe_message(reason) if isinstance(reason, str) else None,
                            "slots": _count_or_none(m.get("slots")), "min_slots": _count_or_none(m.get("min_slots"))}
    serving = {}
    for h, entry in (guard.get("serving") if isinstance(guard.get("serving"), dict) else {}).items():
        if h in ("1", "96") and isinstance(entry, dict):
            reason = entry.get("fallback_reason")
            serving[h] = {k: _text_or_none(entry.get(k)) for k in ("name", "model", "version")} | \
                {"fallback_reason": safe_message(reason) if isinstance(reason, str) else None}
    return {"enabled": guard.get("enabled") is True, "models": models, "serving": serving}


def clean_calendar(doc) -> dict | None:
    """The agent's `calendar` (its [forecast] holidays and timezone, and its [weather] timezone as
    `weather_timezone`: the local days of its outdoor temperature, absent without [weather]), checked; None when
    absent or malformed."""
    from shared.calendar import CalendarError, HolidayCalendar

    if not isinstance(doc, dict) or not isinstance(doc.get("timezone"), str) or len(doc["timezone"]) > 64:
        return None
    code, tz = doc.get("holidays"), doc["timezone"]
    weather_tz = (doc.get("weather") or {}).get("timezone") if isinstance(doc.get("weather"), dict) else None
    try:
        ZoneInfo(tz)
        out = {"holidays": None if code is None else HolidayCalendar.parse(code, tz).code, "timezone": tz}
    except (CalendarError, ZoneInfoNotFoundError, ValueError):
        return None
    try:
        if isinstance(weather_tz, str) and len(weather_tz) <= 64 and ZoneInfo(weather_tz):
            out["weather_timezone"] = weather_tz
    except (ZoneInfoNotFoundError, ValueError):
        pass
    return out


_PROBLEM_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def clean_problems(doc) -> list[dict]:
    """The agent's own problems (edge_agent/runtime/problems.py): code and one bounded line each, at most 16."""
    if not isinstance(doc, list):
        return []
    return [{"code": p["code"], "message": safe_message(p.get("message") or "", 200)} for p in doc[:16]
            if isinstance(p, dict) and isinstance(p.get("code"), str) and _PROBLEM_CODE.fullmatch(p["code"])]


def clean_backup(doc) -> dict | None:
    """The agent's last good backup: its time and age (seconds, at the poll)."""
    if not isinstance(doc, dict) or _finite_or_none(doc.get("age_s")) is None:
        return None
    return {"last_ok": _text_or_none(doc.get("last_ok"), 40), "age_s": _finite_or_none(doc.get("age_s"))}


def clean_status(doc) -> dict:
    """The documented status fields of an answer, checked; BadStatus if it is not an agent's status.

    Counters that are not plain numbers are dropped; nothing else of the answer is kept."""
    if not isinstance(doc, dict) or not isinstance(doc.get("interpreter"), dict) or \
            not isinstance(doc.get("models"), dict) or len(doc["models"]) > 16:
        raise BadStatus("not an agent status")
    models = {}
    for name, m in doc["models"].items():
        if not _MODEL_NAME.fullmatch(name) or not isinstance(m, dict):
            raise BadStatus("bad model entry")
        models[name] = {"active": _version_entry(m.get("active")), "previous": _version_entry(m.get("previous"))}
    last = doc.get("last_forecast")
    counters = doc.get("counters") if isinstance(doc.get("counters"), dict) else {}
    return {"agent_version": _short(doc.get("agent_version"), 40),
            "interpreter": {"name": _short(doc["interpreter"].get("name")),
                            "version": _short(doc["interpreter"].get("version"))},
            "models": models,
            "guard": clean_guard(doc.get("guard")),
            "calendar": clean_calendar(doc.get("calendar")),
            "problems": clean_problems(doc.get("problems")),
            "backup": clean_backup(doc.get("backup")),
            "last_forecast": None if last is None else _short(last, 40),
            "counters": {k: v for k, v in list(counters.items())[:200] if _COUNTER.fullmatch(k)
                         and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}}


def safe_code(code) -> str:
    return code if isinstance(code, str) and re.fullmatch(r"[a-z0-9_]{1,40}", code) else "http_error"


def safe_message(message, max_len: int = 300) -> str:
    """An agent's error message as shown on the page: one line, no control characters, bounded."""
    return _CONTROL.sub(" ", str(message))[:max_len]


def poll(db: Database, node: dict) -> dict:
    """Ask the agent for its status and remember its documented fields (reachable or not).

    A URL that is not an agent (another service on the LAN) gives `reachable: false, code: bad_response` and
    nothing of its answer is stored or shown; HTTP errors are shown as status and code only."""
    try:
        status = {"reachable": True, **clean_status(client(node).status())}
    except ApiError as exc:
        code = safe_code(exc.code)
        if exc.status == 0:
            error = safe_message(exc.message)  # built by the client from the URL and the OS error
        elif code == "bad_response":
            error = "the answer is not an agent's status (wrong URL?)"
        else:
            error = f"the agent answered HTTP {int(exc.status)} ({code})"
        status = {"reachable": False, "error": error, "code": code}
    except Exception:  # not JSON, wrong shape, anything else in the answer
        status = {"reachable": False, "error": "the answer is not an agent's status (wrong URL?)",
                  "code": "bad_response"}
    db.set_node_status(node["id"], status)
    return status


def trained_until_ns(row: dict) -> int | None:
    """Where a version's training data ended: its manifest's `data.end` (the end of the last validation target;
    day-ahead bundles refit on the validation part, and every bundle early-stops on it). None when unknown."""
    end = (row.get("data") or {}).get("end")
    try:
        return parse_time_ns(end) if isinstance(end, str) else None
    except ValueError:
        return None


def recent_mae(bundle_path: Path, series: SlotSeries, start_ns: int, temperature=None) -> tuple[float, int]:
    """MAE of a bundle over the issue times (as in the backtest) from `start_ns` whose whole target window lies in
    the series, and how many issues were scored. `temperature` (training.weather.TemperatureForecasts, from the
    pull's record): what a bundle that takes the outdoor temperature is given at each issue time; without it such
    a bundle has no complete forecast."""
    from shared.inference import LoadedModel
    from training.backtest import issue_times_for

    model = LoadedModel.from_dir(bundle_path)
    h = model.spec.horizon
    end = series.last_ns - h * SLOT_NS + SLOT_NS
    errs = []
    for t in issue_times_for(h, start_ns, end).tolist():
        temp = temperature.at(t) if temperature is not None and model.needs_temperature else None
        f = model.predict(series, t, temperature=temp)
        actual = series.window(t + h * SLOT_NS, h)
        ok = np.isfinite(actual)
        if f.complete and ok.any():
            errs.append(np.abs(f.values[ok] - actual[ok]))
    return (float(np.mean(np.concatenate(errs))) if errs else float("inf")), len(errs)


class Reason(str):
    """A gate's reason: the whole explanation (the string itself, as logged and returned by the API), with a
    one-line `short` for the page ("not installed: no data newer than its training yet; pull again tomorrow or use
    override") and a `code` (recorded with a held push)."""

    short: str
    code: str

    def __new__(cls, text: str, short: str, code: str) -> Reason:
        obj = super().__new__(cls, text)
        obj.short, obj.code = short, code
        return obj


def _when(days: float) -> str:
    return "tomorrow" if days <= 1 else f"in {math.ceil(days)} days"


def gate_window(new: dict, current: dict, series: SlotSeries) -> tuple[int | None, Reason]:
    """The first issue time the two versions are compared from (None: not enough unseen data) and why.

    Only targets after the later of the two training ends count: on days one version trained on it looks better
    than it is (a refitted day-ahead version by about 2 % on its validation windows). At most the last GATE_DAYS
    of them, and at least MIN_UNSEEN_DAYS for the horizon."""
    ends = [trained_until_ns(new), trained_until_ns(current)]
    if None in ends:
        which = new["version"] if ends[0] is None else current["version"]
        return None, Reason(f"version {which} does not say where its training data ended (data.end): push manually",
                            f"not installed: version {which} does not say where its training ended; use override",
                            "no_end")
    h = int(new.get("horizon") or int(new["name"].rsplit("-", 1)[1]))
    unseen = max(ends)
    days = max(0, series.last_ns - unseen) / (SLOTS_PER_DAY * SLOT_NS)
    need = MIN_UNSEEN_DAYS.get(h, max(MIN_UNSEEN_DAYS.values()))
    if days < need:
        return None, Reason(
            f"only {days:.1f} days of recent data after the training end {iso(unseen)} (the later of "
            f"{new['version']} and the active {current['version']}); the gate needs {need} "
            f"(not seen by either): not pushed automatically — push it again after a later pull (the gate "
            f"compares on that), or push it manually with override",
            f"not installed: no data newer than its training yet; pull again {_when(need - days)} or use override",
            "not_unseen")
    start = max(unseen, series.last_ns - GATE_DAYS * SLOTS_PER_DAY * SLOT_NS)
    span = min(days, GATE_DAYS)
    return start, Reason(f"{span:.1f} days after the training end {iso(unseen)}", f"the last {span:.1f} days",
                         "window")


def gate(registry: Registry, node_status: dict | None, new: dict, series: SlotSeries | None,
         temperature=None) -> tuple[bool, Reason]:
    """Automatic pushes only: the new version must not be worse than the node's active one on recent data that
    neither of them trained on. A weather bundle and its active version are both given the pulled temperature
    record as a forecast (`temperature`: server.temperature.as_forecasts, the record + the shipping rule's error,
    the same for both: a fair comparison between them)."""
    active = ((node_status or {}).get("models") or {}).get(new["name"], {}).get("active")
    if not active:
        return True, Reason("the node has no active model for this name",
                            f"installed: the house had no {new['name']} yet", "first")
    if active["sha256"] == new["sha256"]:
        return False, Reason("already active", "not installed: already active", "already_active")
    current = registry.by_sha(new["name"], active["sha256"])  # the model itself: versions repeat across houses
    if current is None:
        return False, Reason(f"the active version {active['version']} is not in this registry: push manually to "
                             f"replace it", "not installed: the active version is not from this server; use "
                             "override to replace it", "unknown_active")
    if series is None:
        return False, Reason("no recent data to compare on: push manually",
                             "not installed: no recent data to compare on; pull history or use override", "no_data")
    start, span = gate_window(new, current, series)
    if start is None:
        return False, span
    (mae_new, n_new), (mae_cur, _) = recent_mae(Path(new["path"]), series, start, temperature), \
        recent_mae(Path(current["path"]), series, start, temperature)
    if not n_new:
        return False, Reason(f"no complete forecast on the {span}: push manually",
                             "not installed: no complete forecast on the recent data; use override", "no_forecast")
    if mae_new <= mae_cur:
        return True, Reason(f"MAE on the {span} {mae_new:.4f} ≤ active {mae_cur:.4f}",
                            f"installed: not worse than the active version on {span.short} (MAE {mae_new:.4f} vs "
                            f"{mae_cur:.4f} kWh)", "passed")
    return False, Reason(f"MAE on the {span} {mae_new:.4f} > active {mae_cur:.4f}: not pushed",
                         f"not installed: {100 * (mae_new / mae_cur - 1):.0f} % worse than the active version on "
                         f"{span.short} (MAE {mae_new:.4f} vs {mae_cur:.4f} kWh)", "worse")


EARLIER_CANDIDATES = 6  # earlier versions of a name the gate tries after the new one (about a week of nightly runs)


def gate_candidates(registry: Registry, node_status: dict | None, new: dict) -> Iterator[dict]:
    """The new version, then the owner's earlier versions of the same name that are newer than the node's active
    one, newest first. A retrain's new version has no unseen days yet (it trained on everything up to now); an
    earlier one that was not pushed has, by the next pulls — so scheduled retrains still replace a model that an
    unseen-data comparison says is worse, a few days later."""
    yield new  # the registry is only asked when the new version does not pass
    active = ((node_status or {}).get("models") or {}).get(new["name"], {}).get("active") or {}
    floor = active.get("version") or ""
    earlier = [r for r in registry.list(limit=50 * EARLIER_CANDIDATES, owner=new["owner"])
               if r["name"] == new["name"] and floor < r["version"] < new["version"]]
    for r in earlier[:EARLIER_CANDIDATES]:
        row = registry.get(new["owner"], r["name"], r["version"])
        if row is not None:
            yield row


def choose_push(registry: Registry, node_status: dict | None, new: dict,
                series: SlotSeries | None, temperature=None) -> tuple[dict | None, Reason]:
    """The version an automatic push sends for `new`'s name (None: none) and the gate's reason: the first of
    gate_candidates that passes the gate; else the new version's own reason."""
    reason = None
    for row in gate_candidates(registry, node_status, new):
        ok, why = gate(registry, node_status, row, series, temperature)
        if ok:
            return row, why if row is new else Reason(
                f"{why} (earlier version {row['version']}: {new['version']} has no unseen days yet)",
                f"{why.short}; the earlier version {row['version']} (the new one has no unseen days yet)", why.code)
        reason = reason or why
    return None, reason


def push(db: Database, node: dict, row: dict, allow_older: bool = False, why: Reason | None = None) -> dict:
    """Push one registered bundle (a registry row); the agent's verdict (accepted or its error code/message) is
    recorded — one line, the details apart (`why`: the gate's reason it passed) — with the row's owner when it is
    not the node's own (a seed)."""
    from shared.bundle import bundle_archive

    name, version = row["name"], row["version"]
    source = None if row["owner"] == f"node:{node['id']}" else row["owner"]
    try:
        result = client(node).push_archive(bundle_archive(Path(row["path"])), allow_older=allow_older)
        answer = safe_code(result.get("status")) if isinstance(result, dict) else "bad_response"
        ok, code, message = answer in ("active", "unchanged"), answer, f"{name} {version} {answer}"
    except ApiError as exc:
        ok, code, message = False, safe_code(exc.code), safe_message(exc.message)
    except ValueError:
        ok, code, message = False, "bad_response", "the answer is not the agent's"
    line = ((why.short if why is not None and why.short.startswith("installed") else "installed") if ok
            else f"not installed: the house's agent refused it ({code})")
    db.add_push(node["id"], name, version, ok, code, line, source,
                details=message if not ok else (str(why) if why is not None else None))
    log.info("push %s %s to %s: %s (%s)", name, version, node["name"], "accepted" if ok else "rejected", message)
    return {"ok": ok, "name": name, "version": version, "code": code, "message": message, "summary": line} | \
        ({"source": source} if source else {})


def held(db: Database, node: dict, row: dict, why: Reason) -> dict:
    """A version the gate did not let through: recorded like a push (one line, the gate's reasoning as details), so
    "Recent pushes" and the overview's "Last push" say why the house still runs its old model."""
    source = None if row["owner"] == f"node:{node['id']}" else row["owner"]
    short = getattr(why, "short", str(why))
    db.add_push(node["id"], row["name"], row["version"], False, GATE_CODE, short, source, details=str(why))
    log.info("push %s %s to %s: held by the gate (%s)", row["name"], row["version"], node["name"], why)
    return {"ok": False, "name": row["name"], "version": row["version"], "gate": str(why), "summary": short} | \
        ({"source": source} if source else {})


GATE_CODE = "gate"  # the `code` of a push the gate held back (not a refusal by the agent)
