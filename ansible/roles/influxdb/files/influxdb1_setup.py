#!/usr/bin/env python3
"""Bring an InfluxDB 1.x server in line with the vault: admin user, database, users with their privileges.

Run by the influxdb role after InfluxDB starts. Idempotent by looking at the server, not by a marker file: a user
that is missing is created, a password the server no longer accepts is set again, a privilege that differs is
granted, and nothing else happens — so a second run changes nothing, and a rotated vault password is applied.

The specification comes as JSON on stdin, because it holds passwords (argv and the environment show in `ps`):
  {"url": "http://127.0.0.1:8086", "database": "energy", "admin_user": "admin", "admin_password": "…",
   "users": [{"name": "edge-agent", "password": "…", "privilege": "ALL"}, …], "wait_seconds": 60}
Prints one line per change (never a secret) and, last, `HOME-ENERGY-CHANGED` if anything changed; exits 1 with
the reason on stderr when the server refuses. Standard library only (it runs with the target's python3).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CHANGED = "HOME-ENERGY-CHANGED"
PRIVILEGES = {"ALL": "ALL PRIVILEGES", "READ": "READ", "WRITE": "WRITE"}


class SetupError(Exception):
    """The server refused or answered something this script cannot act on."""


def string(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ident(value: str) -> str:
    """An InfluxQL quoted identifier."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Server:
    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                return r.status == 204
        except (urllib.error.URLError, OSError):
            return False

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.ping():
            if time.monotonic() > deadline:
                raise SetupError(f"InfluxDB at {self.url} did not answer /ping within {seconds:.0f} s")
            time.sleep(0.5)

    def query(self, statement: str, user: str | None = None, password: str | None = None,
              database: str | None = None) -> tuple[int, dict]:
        """POST one statement (credentials in a Basic header, not in the URL); returns (HTTP status, JSON)."""
        params = {"q": statement, "epoch": "ns"} | ({"db": database} if database else {})
        req = urllib.request.Request(self.url + "/query", method="POST",
                                     data=urllib.parse.urlencode(params).encode())
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}

    def run(self, statement: str, what: str, user: str | None, password: str | None,
            database: str | None = None) -> list[dict]:
        """A statement that must succeed; returns its series. `what` names it in errors (never the statement:
        it may hold a password)."""
        status, doc = self.query(statement, user, password, database)
        error = doc.get("error") or next((r["error"] for r in doc.get("results", []) if "error" in r), None)
        if status != 200 or error:
            raise SetupError(f"InfluxDB at {self.url}: {what} failed (HTTP {status}: {error})")
        return [s for r in doc.get("results", []) for s in r.get("series", [])]


def rows(series: list[dict]) -> list[dict]:
    return [dict(zip(s["columns"], v, strict=True)) for s in series for v in s.get("values", [])]


def ensure_admin(db: Server, user: str, password: str) -> list[str]:
    status, doc = db.query("SHOW USERS", user, password)
    if status == 403 and "create admin user first" in doc.get("error", ""):
        db.run(f"CREATE USER {ident(user)} WITH PASSWORD {string(password)} WITH ALL PRIVILEGES",
               f"creating the admin user {user!r}", None, None)
        return [f"created the admin user {user}"]
    if status == 401:
        raise SetupError(f"InfluxDB at {db.url}: users exist but {user!r} with influxdb_admin_password is refused "
                         "(HTTP 401): the server was set up with another admin password")
    if status != 200:
        raise SetupError(f"InfluxDB at {db.url}: SHOW USERS as {user!r} answered HTTP {status}: {doc.get('error')}")
    users = {r["user"]: r["admin"] for r in rows(db.run("SHOW USERS", "listing users", user, password))}
    if users.get(user):
        return []
    # Only reachable with auth disabled on the server: make the admin anyway, so enabling auth later keeps working.
    if user in users:
        db.run(f"GRANT ALL PRIVILEGES TO {ident(user)}", f"making {user!r} an admin", user, password)
        return [f"made {user} an admin"]
    db.run(f"CREATE USER {ident(user)} WITH PASSWORD {string(password)} WITH ALL PRIVILEGES",
           f"creating the admin user {user!r}", user, password)
    return [f"created the admin user {user}"]


def ensure_database(db: Server, name: str, admin: tuple[str, str]) -> list[str]:
    names = {r["name"] for r in rows(db.run("SHOW DATABASES", "listing databases", *admin))}
    if name in names:
        return []
    db.run(f"CREATE DATABASE {ident(name)}", f"creating the database {name!r}", *admin)
    return [f"created the database {name}"]


def ensure_user(db: Server, spec: dict, database: str, admin: tuple[str, str]) -> list[str]:
    name, password = spec["name"], spec["password"]
    privilege = PRIVILEGES.get(str(spec.get("privilege", "READ")).upper())
    if privilege is None:
        raise SetupError(f"user {name!r}: privilege must be one of {sorted(PRIVILEGES)}")
    changes = []
    users = {r["user"] for r in rows(db.run("SHOW USERS", "listing users", *admin))}
    if name not in users:
        db.run(f"CREATE USER {ident(name)} WITH PASSWORD {string(password)}", f"creating the user {name!r}", *admin)
        changes.append(f"created the user {name}")
    elif db.query("SHOW DATABASES", name, password)[0] == 401:
        db.run(f"SET PASSWORD FOR {ident(name)} = {string(password)}", f"setting the password of {name!r}", *admin)
        changes.append(f"set the password of {name}")
    grants = {r["database"]: r["privilege"]
              for r in rows(db.run(f"SHOW GRANTS FOR {ident(name)}", f"listing the grants of {name!r}", *admin))}
    if grants.get(database) != privilege:
        db.run(f"GRANT {privilege.split()[0]} ON {ident(database)} TO {ident(name)}",
               f"granting {privilege} on {database!r} to {name!r}", *admin)
        changes.append(f"granted {privilege} on {database} to {name}")
    return changes


def _hours(text: str) -> float:
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)([hms])", text or "0s"):
        total += float(value) * {"h": 1.0, "m": 1 / 60, "s": 1 / 3600}[unit]
    return total


def _first(db: Server, source: str, admin: tuple[str, str], database: str) -> int | None:
    req_rows = rows(db.run(f"SELECT * FROM {source} ORDER BY time ASC LIMIT 1", "reading the oldest point", *admin,
                           database=database))
    return int(req_rows[0]["time"]) if req_rows else None


def ensure_retention(db: Server, database: str, spec: dict, admin: tuple[str, str]) -> list[str]:
    """The agent's policies (edge_agent/retention/policies.py, the same rule): `keep` for what lasts, and the
    default policy shortened to raw_days only when nothing older than that is left uncovered — no device reading
    older than the new duration, or its 15-minute aggregates (device_slots) reaching back to the oldest, and the
    flow, forecasts and skill copied into keep (the agent does that for a database that kept everything)."""
    keep, raw_days = spec.get("keep_policy", "keep"), float(spec.get("raw_days", 90))
    changes = []
    pols = {r["name"]: r for r in rows(db.run(f"SHOW RETENTION POLICIES ON {ident(database)}",
                                              "listing retention policies", *admin))}
    if keep not in pols:
        db.run(f"CREATE RETENTION POLICY {ident(keep)} ON {ident(database)} DURATION INF REPLICATION 1 "
               f"SHARD DURATION {int(spec.get('keep_shard_days', 182)) * 24}h", f"creating the policy {keep!r}", *admin)
        changes.append(f"created the retention policy {keep} (forever) on {database}")
    raw = next((r for r in pols.values() if r.get("default")), None)
    if raw is None or raw["name"] == keep:
        return changes
    have, shard = _hours(raw.get("duration")), _hours(raw.get("shardGroupDuration"))
    want = raw_days * 24
    raw_shard = max(1, min(int(spec.get('raw_shard_hours', 168)), int(want)))  # at most the duration (InfluxDB)
    if have and abs(have - want) < 1 and abs(shard - raw_shard) < 0.5:
        return changes
    cutoff = time.time_ns() - int(want * 3600e9)
    if not have or have > want:
        measurements = [r["name"] for r in rows(db.run("SHOW MEASUREMENTS", "listing measurements", *admin,
                                                       database=database))]
        kept = {"energy_flow", "forecast", "forecast_skill", "device_slots"}
        q = lambda rp, m: f"{ident(database)}.{ident(rp)}.{ident(m)}"  # noqa: E731
        oldest = [t for m in measurements if m not in kept | {"agent"}
                  if (t := _first(db, q(raw["name"], m), admin, database)) is not None]
        pending = []
        if oldest and min(oldest) < cutoff:
            slots = _first(db, q(keep, "device_slots"), admin, database) if keep in pols else None
            if slots is None or slots > (min(oldest) // 900_000_000_000 + 1) * 900_000_000_000:
                pending.append("device readings older than raw_days are not aggregated yet")
        for m in sorted((kept - {"device_slots"}) & set(measurements)):
            t = _first(db, q(raw["name"], m), admin, database)
            if t is not None and t < cutoff:
                k = _first(db, q(keep, m), admin, database) if keep in pols else None
                if k is None or k > t:
                    pending.append(f"{m} not copied into {keep} yet")
        if pending:
            print(f"retention: the default policy {raw['name']} is not shortened yet: {'; '.join(pending)} (the "
                  "agent does that on its first start with [retention]; run the playbook again afterwards)")
            return changes
    db.run(f"ALTER RETENTION POLICY {ident(raw['name'])} ON {ident(database)} DURATION {int(want)}h "
           f"SHARD DURATION {raw_shard}h", f"shortening the policy {raw['name']!r}", *admin)
    changes.append(f"raw readings in {raw['name']} kept {raw_days:g} days")
    return changes


def setup(spec: dict) -> list[str]:
    db = Server(spec.get("url", "http://127.0.0.1:8086"))
    db.wait(float(spec.get("wait_seconds", 60)))
    admin = (spec.get("admin_user", "admin"), spec["admin_password"])
    database = spec.get("database", "energy")
    changes = ensure_admin(db, *admin) + ensure_database(db, database, admin)
    for user in spec.get("users", []):
        changes += ensure_user(db, user, database, admin)
    if spec.get("retention"):
        changes += ensure_retention(db, database, spec["retention"], admin)
    return changes


def main() -> int:
    try:
        spec = json.loads(sys.stdin.read())
        changes = setup(spec)
    except (SetupError, ValueError, KeyError) as exc:
        print(f"influxdb1_setup: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    for line in changes:
        print(line)
    if changes:
        print(CHANGED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
