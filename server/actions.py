"""What the page and the JSON API can do (one implementation for both); errors are ActionError with a status.

Every action checks its fields first (server.validate): unknown fields and wrong types are a 400 naming the field.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from server import datafiles, jobs, nodes, temperature
from server.registry import group_owner, node_owner
from server.state import State
from server.validate import (
    ActionError,
    bad,
    ca_file,
    flag,
    integer,
    iso_time,
    json_object,
    only,
    str_list,
    str_map,
    text,
    token,
    url,
)
from shared.agent_client import ApiError
from shared.schema import BUNDLE_NAMES

__all__ = ["ActionError", "add_node", "cancel", "job_or_404", "node_or_404", "pull", "push", "rollback", "seed",
           "train"]
MAX_ID = 2**63 - 1

log = logging.getLogger(__name__)


def node_or_404(s: State, node_id) -> dict:
    node = s.db.node(int(node_id)) if 0 < int(node_id) <= MAX_ID else None
    if node is None:
        raise ActionError(f"no node {node_id}", 404, "not_found")
    return node


def job_or_404(s: State, job_id) -> dict:
    job = s.db.job(int(job_id)) if 0 < int(job_id) <= MAX_ID else None
    if job is None:
        raise ActionError(f"no job {job_id}", 404, "not_found")
    return job


def influx_settings(raw: dict) -> dict:
    """The node's InfluxDB connection (read-only credentials), checked field by field."""
    only(raw, ("version", "url", "database", "org", "bucket", "token", "username", "password", "measurement",
               "field", "tags", "keep_policy"), "influx.")
    if not raw:
        return {}
    out: dict = {"version": integer(raw, "version", 1, 2, 1, "influx.version"),
                 "url": url(raw, "url", True, "influx.url")}
    for key in ("database", "org", "bucket", "username", "measurement", "field", "keep_policy"):
        if (v := text(raw, key, name=f"influx.{key}")) is not None:
            out[key] = v
    for key in ("token", "password"):
        if (v := text(raw, key, max_len=512, name=f"influx.{key}")) is not None:
            out[key] = v
    if (tags := str_map(raw, "tags", "influx.tags")) is not None:
        out["tags"] = tags
    return out


def add_node(s: State, doc: dict) -> dict:
    """Register a node (its first status poll is part of the answer)."""
    only(doc, ("name", "api_url", "api_token", "ca_file", "influx", "retrain_days"))
    name = text(doc, "name", True, 64)
    api_url = url(doc, "api_url", True)
    fields = {"api_token": token(doc, "api_token", True), "ca_file": ca_file(doc, "ca_file", api_url),
              "influx": influx_settings(json_object(doc, "influx")),
              "retrain_days": integer(doc, "retrain_days", 0, 3650, 0)}
    if s.db.node_named(name):
        raise ActionError(f"a node named {name!r} exists already", 409, "exists")
    nid = s.db.add_node(name, api_url, **fields)
    nodes.poll(s.db, s.db.node(nid))
    return nodes.public(s.db.node(nid))


def pull(s: State, node_id, doc: dict) -> dict:
    node = node_or_404(s, node_id)
    only(doc, ("start", "end", "measurement", "field", "tags"))
    start, end = iso_time(doc, "start", True), iso_time(doc, "end", True)
    extra = {k: v for k, v in (("measurement", text(doc, "measurement")), ("field", text(doc, "field")),
                               ("tags", str_map(doc, "tags"))) if v}
    if end <= start:
        raise ActionError("invalid time range: end must be after start", field="end")
    if end > datetime.now(UTC).replace(microsecond=0) and (end - datetime.now(UTC)).days > 1:
        raise ActionError("invalid time range: end is in the future", field="end")
    if not json.loads(node["influx"] or "{}").get("url"):
        raise ActionError(f"node {node['name']} has no InfluxDB connection configured")
    return _enqueue(s, node["id"], "pull", {"start": start.isoformat(), "end": end.isoformat(), **extra})


def train(s: State, node_id, doc: dict) -> dict:
    node = node_or_404(s, node_id) if node_id is not None else None
    only(doc, ("data", "pull_days", "until", "epochs", "quick", "auto_push", "holidays", "timezone", "keep_weather")
         + (() if node else ("group",)))
    params: dict = {"auto_push": flag(doc, "auto_push"), "quick": flag(doc, "quick")}
    if flag(doc, "keep_weather"):  # training --keep-weather: register the weather bundles whatever the rule says
        params["keep_weather"] = True
    if node is None:  # trained on files, for a group of houses: its versions belong to the group
        group = text(doc, "group", max_len=32) or "default"
        try:
            group_owner(group)
        except ValueError as exc:
            raise bad("group", str(exc)) from None
        params["group"] = group
    if (days := integer(doc, "pull_days", 1, 3650)) is not None:
        if node is None or doc.get("data"):
            raise bad("pull_days", "is for a node's training without data files (it pulls the node's last days)")
        params["pull_days"] = days
    if (until := iso_time(doc, "until")) is not None:
        params["until"] = until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if (data := str_list(doc, "data")) is not None:
        try:
            params["data"] = [str(datafiles.resolve(s.config, p)) for p in data]
        except datafiles.DataFileError as exc:
            raise bad("data", str(exc)) from None
    if (epochs := integer(doc, "epochs", 1, 1000)) is not None:
        params["epochs"] = epochs
    params |= _calendar(doc)
    return _enqueue(s, node["id"] if node else None, "train", params)


def _calendar(doc: dict) -> dict:
    """`holidays` ("DE", "DE-HE"; "" for none) and `timezone` of a training, checked with the holidays package;
    without them a node's training takes the agent's own (its status `calendar`)."""
    from shared.calendar import CalendarError, HolidayCalendar

    if doc.get("holidays") == "":  # none, whatever the agent says
        return {"holidays": ""}
    code, tz = text(doc, "holidays", max_len=16), text(doc, "timezone", max_len=64)
    if code is None:
        if tz is not None:
            raise bad("timezone", "goes with holidays (the timezone of the holiday calendar)")
        return {}
    try:
        cal = HolidayCalendar.parse(code, tz or "UTC").check()
    except CalendarError as exc:
        raise bad("timezone" if "timezone" in str(exc) else "holidays", str(exc)) from None
    return {"holidays": cal.code, "timezone": cal.timezone}


def _enqueue(s: State, node_id, kind: str, params: dict) -> dict:
    try:
        jid = jobs.enqueue(s.db, node_id, kind, params)
    except jobs.JobRefused as exc:
        raise ActionError(str(exc), 409, "busy") from None
    return jobs.public(s.db.job(jid))


def cancel(s: State, job_id, doc: dict | None = None) -> dict:
    only(doc or {}, ())
    job = job_or_404(s, job_id)
    if job["state"] == "queued":
        s.db.job_update(job["id"], state="cancelled", stage="cancelled", finished=time.time())
    elif job["state"] == "running":
        s.db.job_update(job["id"], cancel=1)
    else:
        raise ActionError(f"job {job_id} is {job['state']}: nothing to cancel", 409, "finished")
    return jobs.public(s.db.job(job["id"]))


def push(s: State, node_id, doc: dict) -> dict:
    """Push one of the node's own training runs (all bundles, or given names). Without `override`, the gate decides.

    Only the node's own versions are found here: another house's or a group's version is `seed`, an explicit and
    recorded action, so that a version trained on house A never reaches house B by a slip."""
    node = node_or_404(s, node_id)
    only(doc, ("version", "names", "override", "allow_older"))
    version = text(doc, "version", True, 64)
    names = str_list(doc, "names", len(BUNDLE_NAMES), BUNDLE_NAMES) or list(BUNDLE_NAMES)
    rows = [s.registry.get(node_owner(node["id"]), n, version) for n in names]
    if not any(rows):
        hint = "; another house's or a group's version is installed with seed (from_node or from_group)" \
            if any(s.registry.named(n, version) for n in names) else ""
        raise ActionError(f"no version {version!r} trained for node {node['name']}{hint}", 404, "not_found")
    return _push_rows(s, node, rows, flag(doc, "override"), flag(doc, "allow_older"))


def seed(s: State, node_id, doc: dict) -> dict:
    """Install another house's (`from_node`) or a group's (`from_group`) version on this node — e.g. a new house
    before it has history of its own. Recorded with its source; the gate applies unless `override`."""
    node = node_or_404(s, node_id)
    only(doc, ("from_node", "from_group", "version", "names", "override", "allow_older"))
    from_node, group = integer(doc, "from_node", 1, MAX_ID), text(doc, "from_group", max_len=32)
    if (from_node is None) == (group is None):  # the field named: the one given (an empty or null one too)
        raise bad("from_group" if "from_group" in doc else "from_node",
                  "give either from_node (a node id) or from_group (a group name)")
    if from_node is not None:
        source = node_or_404(s, from_node)
        if source["id"] == node["id"]:
            raise bad("from_node", f"is node {node['name']} itself: push its own versions with push")
        owner = node_owner(source["id"])
    else:
        try:
            owner = group_owner(group)
        except ValueError as exc:
            raise bad("from_group", str(exc)) from None
    version = text(doc, "version", True, 64)
    names = str_list(doc, "names", len(BUNDLE_NAMES), BUNDLE_NAMES) or list(BUNDLE_NAMES)
    rows = [s.registry.get(owner, n, version) for n in names]
    if not any(rows):
        raise ActionError(f"no version {version!r} of {owner}", 404, "not_found")
    return _push_rows(s, node, rows, flag(doc, "override"), flag(doc, "allow_older")) | {"source": owner}


def _push_rows(s: State, node: dict, rows: list, override: bool, allow_older: bool) -> dict:
    """Push registry rows to a node that answered with the agent's status; each through the gate unless
    `override`."""
    status = nodes.poll(s.db, node)
    if not status.get("reachable"):
        raise ActionError(f"node {node['name']} is unreachable: {status.get('error')}", 502, "unreachable")
    results = []
    series, temperature, why, read = None, None, None, False
    for row in rows:
        if row is None:
            continue
        if not override:
            if not read:
                series, temperature, read = *_recent_series(s, node, status), True
            ok, why = nodes.gate(s.registry, status, row, series, temperature)
            if not ok:
                results.append(nodes.held(s.db, node, row, why))
                continue
        results.append(nodes.push(s.db, node, row, allow_older=allow_older, why=None if override else why))
    nodes.poll(s.db, node)
    return {"node": node["name"], "results": results}


def _recent_series(s: State, node, status: dict | None) -> tuple:
    """The node's latest pulled history and the outdoor temperature pulled with it (None without): what the gate
    compares the new and the active version on."""
    last = s.db.last_pull(node["id"])
    if not last:
        return None, None
    from training.data import load

    try:
        last = datafiles.checked_pull(s.config, last)  # the files a training of this pull would read, no others
    except datafiles.DataFileError as exc:
        log.warning("push gate of node %s: the latest pull is not readable: %s", node["name"], exc)
        return None, None
    temp_file = (last.get("temperature") or {}).get("file")
    return load([last["file"]]), temperature.as_forecasts(temp_file, temperature.house_timezone({}, status))


def rollback(s: State, node_id, doc: dict) -> dict:
    node = node_or_404(s, node_id)
    only(doc, ("name",))
    name = text(doc, "name", True, 20)
    if name not in BUNDLE_NAMES:
        raise bad("name", f"must be {', '.join(BUNDLE_NAMES[:-1])} or {BUNDLE_NAMES[-1]}")
    status = nodes.poll(s.db, node)  # only an answer with the agent's documented status is talked to further
    if not status.get("reachable"):
        raise ActionError(f"node {node['name']} is unreachable: {status.get('error')}", 502, "unreachable")
    try:
        result = nodes.client(node).rollback(name)
    except ApiError as exc:
        raise ActionError(f"node {node['name']} refused the rollback ({nodes.safe_code(exc.code)}): "
                          f"{nodes.safe_message(exc.message)}", 502 if exc.status == 0 else 409,
                          nodes.safe_code(exc.code)) from None
    except ValueError:
        raise ActionError(f"node {node['name']} gave an answer that is not the agent's", 502, "bad_response") from None
    nodes.poll(s.db, node)
    return {"name": name, "version": str(result.get("version", ""))[:64], "status": str(result.get("status", ""))[:20]} \
        if isinstance(result, dict) else {"name": name}
