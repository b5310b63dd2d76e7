"""SQLite index: nodes, model versions, jobs, pushes, login tries, sessions — and every SQL statement the server
runs, as named methods, so that views, actions and the job worker never hold SQL. One connection per thread; WAL.

The file holds node tokens and InfluxDB credentials: it is created 0600 (SQLite gives its -wal and -shm files the
same mode)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from server.files import private_file

# Versions belong to an owner ("node:<id>" or "group:<name>"): two houses trained in the same second keep both.
VERSIONS_TABLE = """CREATE TABLE IF NOT EXISTS versions (
  id INTEGER PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL,
  horizon INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, metrics TEXT NOT NULL,
  data TEXT NOT NULL, plot TEXT, job_id INTEGER, created REAL NOT NULL, quick INTEGER,
  UNIQUE(owner, name, version))"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
  id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, api_url TEXT NOT NULL, api_token TEXT NOT NULL,
  influx TEXT NOT NULL DEFAULT '{}', retrain_days INTEGER NOT NULL DEFAULT 0,
  status TEXT, status_at REAL, created REAL NOT NULL, ca_file TEXT, skill TEXT, skill_at REAL);
{versions};
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY, node_id INTEGER, kind TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
  percent REAL NOT NULL DEFAULT 0, stage TEXT NOT NULL DEFAULT 'queued', log TEXT NOT NULL DEFAULT '',
  result TEXT, error TEXT, cancel INTEGER NOT NULL DEFAULT 0, worker TEXT,
  created REAL NOT NULL, started REAL, finished REAL,
  scheduled INTEGER NOT NULL DEFAULT 0, ray_node TEXT, host TEXT, peak_mb REAL);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_job_per_node ON jobs(node_id) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS pushes (
  id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, ok INTEGER NOT NULL,
  code TEXT, message TEXT, created REAL NOT NULL, source TEXT);
DROP TABLE IF EXISTS login_attempts;
CREATE TABLE IF NOT EXISTS login_tries (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, account TEXT NOT NULL,
  at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_tries_at ON login_tries(at);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL,
  expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (node_id INTEGER NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
  since REAL NOT NULL, notified REAL, PRIMARY KEY (node_id, code));
""".replace("{versions}", VERSIONS_TABLE)
# Made after the migrations (they name columns an older database lacks until then).
INDEXES = """
CREATE INDEX IF NOT EXISTS versions_by_owner ON versions(owner, version);
CREATE INDEX IF NOT EXISTS versions_by_sha ON versions(sha256);
CREATE INDEX IF NOT EXISTS jobs_by_node ON jobs(node_id, kind, id);
CREATE INDEX IF NOT EXISTS pushes_by_node ON pushes(node_id, id);
"""
# columns added after a table was first created: (table, column, declaration)
MIGRATIONS = (("nodes", "ca_file", "TEXT"), ("pushes", "source", "TEXT"), ("nodes", "skill", "TEXT"),
              ("nodes", "skill_at", "REAL"), ("jobs", "scheduled", "INTEGER NOT NULL DEFAULT 0"),
              ("jobs", "ray_node", "TEXT"), ("jobs", "host", "TEXT"), ("jobs", "peak_mb", "REAL"),
              ("nodes", "reachable_at", "REAL"), ("pushes", "details", "TEXT"), ("versions", "quick", "INTEGER"))
JOB_SUMMARY = "id, node_id, kind, state, percent, stage, error, created, started, finished, scheduled, host, peak_mb"
VERSION_SUMMARY = "id, owner, name, version, kind, horizon, sha256, bytes, metrics, data, job_id, created, quick"
VERSION_COLUMNS = "id, owner, name, version, kind, horizon, path, sha256, bytes, metrics, data, plot, job_id, created"
DEFAULT_GROUP = "group:default"  # the owner of versions trained without a node (and of older, unowned ones)


class Database:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        for p in (self.path, self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            if p == self.path or p.exists():
                private_file(p)
        with self.connect() as c:
            c.executescript(SCHEMA)
            self._migrate(c)
            self._own_versions(c)
            c.executescript(INDEXES)

    @staticmethod
    def _own_versions(c: sqlite3.Connection) -> None:
        """A database from before versions had owners (unique by name and version only): rebuild the table with an
        `owner` — the node of the job that trained a version, else the default group. One transaction; a second
        worker racing here finds the job done."""
        if "owner" in {r[1] for r in c.execute("PRAGMA table_info(versions)")}:
            return
        c.execute("BEGIN IMMEDIATE")
        try:
            if "owner" not in {r[1] for r in c.execute("PRAGMA table_info(versions)")}:
                c.execute("ALTER TABLE versions RENAME TO versions_unowned")
                c.execute(VERSIONS_TABLE)
                c.execute(f"INSERT INTO versions({VERSION_COLUMNS}) SELECT v.id, coalesce((SELECT 'node:' || "
                          f"j.node_id FROM jobs j WHERE j.id=v.job_id AND j.node_id IS NOT NULL), ?), v.name, "
                          f"v.version, v.kind, v.horizon, v.path, v.sha256, v.bytes, v.metrics, v.data, v.plot, "
                          f"v.job_id, v.created FROM versions_unowned v", (DEFAULT_GROUP,))
                c.execute("DROP TABLE versions_unowned")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    @staticmethod
    def _migrate(c: sqlite3.Connection) -> None:
        """Add the columns a database made by an older version lacks (several workers may race: that is fine)."""
        for table, column, decl in MIGRATIONS:
            if column not in {r[1] for r in c.execute(f"PRAGMA table_info({table})")}:
                try:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    # -- primitives (also for tests and benchmarks that look at the tables) ------------------------------------
    def all(self, sql: str, *args) -> list[dict]:
        return [dict(r) for r in self.connect().execute(sql, args).fetchall()]

    def one(self, sql: str, *args) -> dict | None:
        r = self.connect().execute(sql, args).fetchone()
        return dict(r) if r else None

    def run(self, sql: str, *args) -> int:
        cur = self.connect().execute(sql, args)
        return cur.lastrowid

    def counts(self) -> dict:
        """For the status route: nodes, versions and running jobs."""
        return self.one("SELECT (SELECT count(*) FROM nodes) AS nodes, (SELECT count(*) FROM versions) AS versions, "
                        "(SELECT count(*) FROM jobs WHERE state='running') AS jobs_running")

    # -- nodes -------------------------------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        return self.all("SELECT * FROM nodes ORDER BY name")

    def node(self, node_id: int) -> dict | None:
        return self.one("SELECT * FROM nodes WHERE id=?", node_id)

    def node_named(self, name: str) -> dict | None:
        return self.one("SELECT * FROM nodes WHERE name=?", name)

    def add_node(self, name: str, api_url: str, api_token: str, influx: dict, retrain_days: int,
                 ca_file: str | None = None) -> int:
        return self.run("INSERT INTO nodes(name, api_url, api_token, influx, retrain_days, ca_file, created) "
                        "VALUES (?,?,?,?,?,?,?)", name, api_url, api_token, json.dumps(influx), retrain_days,
                        ca_file, time.time())

    def set_node_status(self, node_id: int, status: dict) -> None:
        now = time.time()
        self.run("UPDATE nodes SET status=?, status_at=?, reachable_at=CASE WHEN ? THEN ? ELSE reachable_at END "
                 "WHERE id=?", json.dumps(status), now, bool(status.get("reachable")), now, node_id)

    # -- alerts (server/notify.py): one row per house and problem while it lasts -----------------------------------
    def alerts(self, node_id: int | None = None) -> list[dict]:
        if node_id is None:
            return self.all("SELECT * FROM alerts ORDER BY node_id, code")
        return self.all("SELECT * FROM alerts WHERE node_id=? ORDER BY code", node_id)

    def open_alert(self, node_id: int, code: str, message: str, since: float) -> None:
        self.run("INSERT INTO alerts(node_id, code, message, since) VALUES (?, ?, ?, ?) ON CONFLICT(node_id, code) "
                 "DO UPDATE SET message=excluded.message", node_id, code, message, since)

    def alert_notified(self, node_id: int, code: str, at: float) -> None:
        self.run("UPDATE alerts SET notified=? WHERE node_id=? AND code=?", at, node_id, code)

    def close_alert(self, node_id: int, code: str) -> None:
        self.run("DELETE FROM alerts WHERE node_id=? AND code=?", node_id, code)

    def set_node_skill(self, node_id: int, skill: dict) -> None:
        self.run("UPDATE nodes SET skill=?, skill_at=? WHERE id=?", json.dumps(skill), time.time(), node_id)

    def overview(self) -> list[dict]:
        """Every node with what the overview shows: status, live skill, and its last pull, training and push
        (one query; the indexes on jobs and pushes by node keep it cheap for a thousand houses)."""
        return self.all(
            "SELECT n.id, n.name, n.api_url, n.status, n.status_at, n.skill, n.skill_at, n.retrain_days, "
            "n.reachable_at, n.created, "
            "(SELECT max(j.finished) FROM jobs j WHERE j.node_id=n.id AND j.state='done' AND (j.kind='pull' "
            " OR (j.kind='train' AND json_extract(j.result, '$.pulled') IS NOT NULL))) AS last_pull, "
            "(SELECT json_object('id', j.id, 'state', j.state, 'stage', j.stage, 'created', j.created, "
            " 'finished', j.finished, 'error', j.error) FROM jobs j WHERE j.node_id=n.id AND j.kind='train' "
            " ORDER BY j.id DESC LIMIT 1) AS last_train, "
            "(SELECT json_object('ok', p.ok, 'name', p.name, 'version', p.version, 'created', p.created, "
            " 'message', p.message, 'source', p.source, 'code', p.code) FROM pushes p WHERE p.node_id=n.id ORDER BY p.id DESC "
            " LIMIT 1) AS last_push "
            "FROM nodes n ORDER BY n.name")

    def nodes_to_retrain(self) -> list[dict]:
        """Nodes with retrain_days > 0, each with `last_train`: the creation time of its newest training job;
        never trained first, then the longest untrained (the order their retrains are queued in)."""
        return self.all("SELECT * FROM (SELECT n.*, (SELECT max(created) FROM jobs j WHERE j.node_id=n.id AND "
                        "j.kind='train') AS last_train FROM nodes n WHERE retrain_days > 0) "
                        "ORDER BY last_train IS NOT NULL, last_train, id")

    # -- versions ----------------------------------------------------------------------------------------------
    def add_version(self, owner: str, doc: dict, path: Path, plot: str | None, job_id: int | None) -> None:
        """Index a bundle of `owner` by its manifest `doc`; sqlite3.IntegrityError if the owner has that version
        (Registry.add_run picks a free one first)."""
        quick = (doc.get("training") or {}).get("quick")  # a quick training (the demo's first model); None: unknown
        self.run("INSERT INTO versions(owner, name, version, kind, horizon, path, sha256, bytes, metrics, data, "
                 "plot, job_id, created, quick) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", owner, doc["name"],
                 doc["version"], doc["kind"], doc["horizon_steps"], str(path), doc["model"]["sha256"],
                 doc["model"]["bytes"], json.dumps(doc["metrics"]), json.dumps(doc["data"]), plot, job_id,
                 time.time(), None if quick is None else int(bool(quick)))

    def version(self, owner: str, name: str, version: str) -> dict | None:
        return self.one("SELECT * FROM versions WHERE owner=? AND name=? AND version=?", owner, name, version)

    def versions_named(self, name: str, version: str) -> list[dict]:
        """Every owner's row of this name and version (the same timestamp can belong to several houses)."""
        return self.all("SELECT * FROM versions WHERE name=? AND version=? ORDER BY owner", name, version)

    def version_by_sha(self, name: str, sha256: str) -> dict | None:
        """The registered bundle with this model (what a node reports as active: its sha256 names it exactly)."""
        return self.one("SELECT * FROM versions WHERE name=? AND sha256=? ORDER BY id LIMIT 1", name, sha256)

    def owners_by_sha(self, shas: list[str]) -> dict[str, str]:
        """sha256 → owner, for the models the nodes report (who they were trained for)."""
        out: dict[str, str] = {}
        for k in range(0, len(shas), 500):
            chunk = shas[k:k + 500]
            for r in self.all(f"SELECT sha256, owner FROM versions WHERE sha256 IN ({','.join('?' * len(chunk))}) "
                              "ORDER BY id DESC", *chunk):
                out[r["sha256"]] = r["owner"]
        return out

    def versions(self, limit: int, owner: str | None = None) -> list[dict]:
        """The newest versions (of one owner, or of all) without path and plot."""
        if owner is None:
            return self.all(f"SELECT {VERSION_SUMMARY} FROM versions ORDER BY version DESC, owner, name LIMIT ?",
                            limit)
        return self.all(f"SELECT {VERSION_SUMMARY} FROM versions WHERE owner=? ORDER BY version DESC, name LIMIT ?",
                        owner, limit)

    def owner_runs(self, owner: str) -> list[dict]:
        """The owner's training runs, newest first: version, its bundles' paths and model hashes."""
        return self.all("SELECT version, group_concat(path, char(10)) AS paths, group_concat(sha256) AS shas, "
                        "sum(bytes) AS bytes FROM versions WHERE owner=? GROUP BY version ORDER BY version DESC",
                        owner)

    def delete_run(self, owner: str, version: str) -> None:
        self.run("DELETE FROM versions WHERE owner=? AND version=?", owner, version)

    def owner_has_version(self, owner: str, version: str) -> bool:
        return self.one("SELECT 1 AS x FROM versions WHERE owner=? AND version=? LIMIT 1", owner, version) is not None

    def versions_mark(self) -> tuple:
        """Changes whenever a version is added or replaced: a cache key for the version list."""
        row = self.one("SELECT count(*) AS n, max(id) AS last, max(created) AS t FROM versions")
        return row["n"], row["last"], row["t"]

    def newest_plots(self, owner: str) -> dict[tuple[str, str], str | None]:
        """(name, version) → validation plot, for the owner's newest training run."""
        return {(r["name"], r["version"]): r["plot"] for r in self.all(
            "SELECT name, version, plot FROM versions WHERE owner=? AND version = "
            "(SELECT max(version) FROM versions WHERE owner=?)", owner, owner)}

    # -- pushes ------------------------------------------------------------------------------------------------
    def add_push(self, node_id: int, name: str, version: str, ok: bool, code: str, message: str,
                 source: str | None = None, details: str | None = None) -> None:
        """Record a push and the node's verdict (or the gate's: code `gate`); `message` is one line, `details` the
        rest; `source` names the owner when the version is not the node's own (a seed from another house or a
        group)."""
        self.run("INSERT INTO pushes(node_id, name, version, ok, code, message, created, source, details) "
                 "VALUES (?,?,?,?,?,?,?,?,?)", node_id, name, version, int(ok), code, message, time.time(), source,
                 details)

    def recent_pushes(self, limit: int, node_id: int | None = None) -> list[dict]:
        where = "WHERE p.node_id=? " if node_id is not None else ""
        args = (node_id,) if node_id is not None else ()
        return self.all(f"SELECT p.*, n.name AS node FROM pushes p JOIN nodes n ON n.id=p.node_id {where}"
                        "ORDER BY p.id DESC LIMIT ?", *args, limit)

    # -- jobs --------------------------------------------------------------------------------------------------
    def add_job(self, node_id: int | None, kind: str, params: dict, scheduled: bool = False) -> int:
        """A queued job; sqlite3.IntegrityError when the node has a queued or running job already."""
        return self.run("INSERT INTO jobs(node_id, kind, params, state, created, scheduled) VALUES (?,?,?,?,?,?)",
                        node_id, kind, json.dumps(params), "queued", time.time(), int(scheduled))

    def job(self, job_id: int) -> dict | None:
        return self.one("SELECT * FROM jobs WHERE id=?", job_id)

    def recent_jobs(self, limit: int, summary: bool = False, node_id: int | None = None) -> list[dict]:
        """The newest jobs (of one node, or all); `summary` leaves out params, log, result and worker."""
        cols = JOB_SUMMARY if summary else "*"
        if node_id is None:
            return self.all(f"SELECT {cols} FROM jobs ORDER BY id DESC LIMIT ?", limit)
        return self.all(f"SELECT {cols} FROM jobs WHERE node_id=? ORDER BY id DESC LIMIT ?", node_id, limit)

    def running_jobs(self, worker: str | None = None) -> list[dict]:
        """Jobs in state running (of one worker, or all)."""
        if worker is None:
            return self.all("SELECT * FROM jobs WHERE state='running' ORDER BY id")
        return self.all("SELECT * FROM jobs WHERE state='running' AND worker=? ORDER BY id", worker)

    def last_pull(self, node_id: int) -> dict | None:
        """The node's newest finished history pull (a pull job, or a training job that pulled first): its file."""
        row = self.one("SELECT coalesce(json_extract(result, '$.pulled'), result) AS pulled FROM jobs "
                       "WHERE node_id=? AND state='done' AND (kind='pull' OR json_extract(result, '$.pulled') "
                       "IS NOT NULL) ORDER BY id DESC LIMIT 1", node_id)
        return json.loads(row["pulled"]) if row else None

    def claim_job(self, worker: str, kinds: tuple[str, ...] = ("pull", "train")) -> dict | None:
        """Atomically take the next queued job of these kinds (safe across processes: one UPDATE decides).

        Jobs an operator asked for go before scheduled ones; otherwise the oldest first. With one queued job per
        node at most, every house gets its turn: a nightly retrain of all houses runs in the order it was queued
        (longest untrained first), and no house can take a second place in the queue."""
        c = self.connect()
        marks = ",".join("?" * len(kinds))
        row = c.execute(f"UPDATE jobs SET state='running', worker=?, started=?, stage='starting' "
                        f"WHERE id = (SELECT id FROM jobs WHERE state='queued' AND kind IN ({marks}) "
                        f"ORDER BY scheduled, id LIMIT 1) AND state='queued' RETURNING *",
                        (worker, time.time(), *kinds)).fetchone()
        return dict(row) if row else None

    def job_update(self, job_id: int, **fields) -> None:
        if "result" in fields and not isinstance(fields["result"], str | None):
            fields["result"] = json.dumps(fields["result"])
        sets = ", ".join(f"{k}=?" for k in fields)
        self.run(f"UPDATE jobs SET {sets} WHERE id=?", *fields.values(), job_id)

    def job_log(self, job_id: int, line: str) -> None:
        self.run("UPDATE jobs SET log = substr(log || ? || char(10), -20000) WHERE id=?", line, job_id)

    def cancel_requested(self, job_id: int) -> bool:
        row = self.one("SELECT cancel FROM jobs WHERE id=?", job_id)
        return bool(row and row["cancel"])

    # -- sessions ----------------------------------------------------------------------------------------------
    def add_session(self, key: str, user: str, lifetime_s: float) -> None:
        """Store a session by the hash of its id (expired ones are dropped on the way)."""
        now = time.time()
        self.run("DELETE FROM sessions WHERE expires<=?", now)
        self.run("INSERT INTO sessions(id, user, created, expires) VALUES (?,?,?,?)", key, user, now, now + lifetime_s)

    def session_user(self, key: str) -> str | None:
        row = self.one("SELECT user FROM sessions WHERE id=? AND expires>?", key, time.time())
        return row["user"] if row else None

    def delete_session(self, key: str) -> None:
        self.run("DELETE FROM sessions WHERE id=?", key)

    # -- login tries -------------------------------------------------------------------------------------------
    def login_try(self, ip: str, account: str, window_s: float, per_ip: int, per_account: int) -> int | None:
        """Record a login try, then count: None when this address (over `per_ip`) or this account (over
        `per_account`, 0: no limit) has had too many in the window.

        Recording before counting, in one write transaction, means parallel tries cannot all pass the check; a
        refused try is removed again (it checked no password), so the rows count the passwords checked."""
        now = time.time()
        c = self.connect()
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("DELETE FROM login_tries WHERE at<?", (now - window_s,))
            tid = c.execute("INSERT INTO login_tries(ip, account, at) VALUES (?,?,?)", (ip, account, now)).lastrowid
            by_ip = c.execute("SELECT count(*) FROM login_tries WHERE ip=?", (ip,)).fetchone()[0]
            by_account = c.execute("SELECT count(*) FROM login_tries WHERE account=?", (account,)).fetchone()[0]
            over = by_ip > per_ip or bool(per_account and by_account > per_account)
            if over:
                c.execute("DELETE FROM login_tries WHERE id=?", (tid,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return None if over else tid

    def forget_login_try(self, try_id: int) -> None:
        """A successful login: its try does not count against the limits."""
        self.run("DELETE FROM login_tries WHERE id=?", try_id)
