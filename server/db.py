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

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
  id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, api_url TEXT NOT NULL, api_token TEXT NOT NULL,
  influx TEXT NOT NULL DEFAULT '{}', retrain_days INTEGER NOT NULL DEFAULT 0,
  status TEXT, status_at REAL, created REAL NOT NULL, ca_file TEXT);
CREATE TABLE IF NOT EXISTS versions (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL, horizon INTEGER NOT NULL,
  path TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, metrics TEXT NOT NULL, data TEXT NOT NULL,
  plot TEXT, job_id INTEGER, created REAL NOT NULL, UNIQUE(name, version));
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY, node_id INTEGER, kind TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
  percent REAL NOT NULL DEFAULT 0, stage TEXT NOT NULL DEFAULT 'queued', log TEXT NOT NULL DEFAULT '',
  result TEXT, error TEXT, cancel INTEGER NOT NULL DEFAULT 0, worker TEXT,
  created REAL NOT NULL, started REAL, finished REAL);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_job_per_node ON jobs(node_id) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS pushes (
  id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, ok INTEGER NOT NULL,
  code TEXT, message TEXT, created REAL NOT NULL);
DROP TABLE IF EXISTS login_attempts;
CREATE TABLE IF NOT EXISTS login_tries (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, account TEXT NOT NULL,
  at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_tries_at ON login_tries(at);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL,
  expires REAL NOT NULL);
"""
# columns added after a table was first created: (table, column, declaration)
MIGRATIONS = (("nodes", "ca_file", "TEXT"),)
JOB_SUMMARY = "id, node_id, kind, state, percent, stage, error, created, started, finished"
VERSION_SUMMARY = "id, name, version, kind, horizon, sha256, bytes, metrics, data, job_id, created"


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
        self.run("UPDATE nodes SET status=?, status_at=? WHERE id=?", json.dumps(status), time.time(), node_id)

    def nodes_to_retrain(self) -> list[dict]:
        """Nodes with retrain_days > 0, each with `last_train`: the creation time of its newest training job."""
        return self.all("SELECT n.*, (SELECT max(created) FROM jobs j WHERE j.node_id=n.id AND j.kind='train') "
                        "AS last_train FROM nodes n WHERE retrain_days > 0")

    # -- versions ----------------------------------------------------------------------------------------------
    def add_version(self, doc: dict, path: Path, plot: str | None, job_id: int | None) -> None:
        """Index a bundle by its manifest `doc` (a re-registered version replaces the row)."""
        self.run("INSERT OR REPLACE INTO versions(name, version, kind, horizon, path, sha256, bytes, metrics, data, "
                 "plot, job_id, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", doc["name"], doc["version"],
                 doc["kind"], doc["horizon_steps"], str(path), doc["model"]["sha256"], doc["model"]["bytes"],
                 json.dumps(doc["metrics"]), json.dumps(doc["data"]), plot, job_id, time.time())

    def version(self, name: str, version: str) -> dict | None:
        return self.one("SELECT * FROM versions WHERE name=? AND version=?", name, version)

    def versions(self, limit: int) -> list[dict]:
        """The newest versions without path and plot."""
        return self.all(f"SELECT {VERSION_SUMMARY} FROM versions ORDER BY version DESC, name LIMIT ?", limit)

    def versions_mark(self) -> tuple:
        """Changes whenever a version is added or replaced: a cache key for the version list."""
        row = self.one("SELECT count(*) AS n, max(id) AS last, max(created) AS t FROM versions")
        return row["n"], row["last"], row["t"]

    def newest_plots(self) -> dict[tuple[str, str], str | None]:
        """(name, version) → validation plot, for the newest training run."""
        return {(r["name"], r["version"]): r["plot"] for r in self.all(
            "SELECT name, version, plot FROM versions WHERE version = (SELECT max(version) FROM versions)")}

    # -- pushes ------------------------------------------------------------------------------------------------
    def add_push(self, node_id: int, name: str, version: str, ok: bool, code: str, message: str) -> None:
        self.run("INSERT INTO pushes(node_id, name, version, ok, code, message, created) VALUES (?,?,?,?,?,?,?)",
                 node_id, name, version, int(ok), code, message, time.time())

    def recent_pushes(self, limit: int) -> list[dict]:
        return self.all("SELECT p.*, n.name AS node FROM pushes p JOIN nodes n ON n.id=p.node_id "
                        "ORDER BY p.id DESC LIMIT ?", limit)

    # -- jobs --------------------------------------------------------------------------------------------------
    def add_job(self, node_id: int | None, kind: str, params: dict) -> int:
        """A queued job; sqlite3.IntegrityError when the node has a queued or running job already."""
        return self.run("INSERT INTO jobs(node_id, kind, params, state, created) VALUES (?,?,?,?,?)", node_id, kind,
                        json.dumps(params), "queued", time.time())

    def job(self, job_id: int) -> dict | None:
        return self.one("SELECT * FROM jobs WHERE id=?", job_id)

    def recent_jobs(self, limit: int, summary: bool = False) -> list[dict]:
        """The newest jobs; `summary` leaves out params, log, result and worker."""
        return self.all(f"SELECT {JOB_SUMMARY if summary else '*'} FROM jobs ORDER BY id DESC LIMIT ?", limit)

    def last_pull(self, node_id: int) -> dict | None:
        """The node's newest finished history pull (a pull job, or a training job that pulled first): its file."""
        row = self.one("SELECT coalesce(json_extract(result, '$.pulled'), result) AS pulled FROM jobs "
                       "WHERE node_id=? AND state='done' AND (kind='pull' OR json_extract(result, '$.pulled') "
                       "IS NOT NULL) ORDER BY id DESC LIMIT 1", node_id)
        return json.loads(row["pulled"]) if row else None

    def claim_job(self, worker: str) -> dict | None:
        """Atomically take the oldest queued job (safe across processes: one UPDATE decides)."""
        c = self.connect()
        now = time.time()
        row = c.execute("UPDATE jobs SET state='running', worker=?, started=?, stage='starting' "
                        "WHERE id = (SELECT id FROM jobs WHERE state='queued' ORDER BY id LIMIT 1) "
                        "AND state='queued' RETURNING *", (worker, now)).fetchone()
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
