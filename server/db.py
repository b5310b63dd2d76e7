"""SQLite index: nodes, model versions, jobs, login tries, sessions. One connection per thread; WAL mode.

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
  status TEXT, status_at REAL, created REAL NOT NULL);
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


class Database:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        for p in (self.path, self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            if p == self.path or p.exists():
                private_file(p)
        with self.connect() as c:
            c.executescript(SCHEMA)

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

    def all(self, sql: str, *args) -> list[dict]:
        return [dict(r) for r in self.connect().execute(sql, args).fetchall()]

    def one(self, sql: str, *args) -> dict | None:
        r = self.connect().execute(sql, args).fetchone()
        return dict(r) if r else None

    def run(self, sql: str, *args) -> int:
        cur = self.connect().execute(sql, args)
        return cur.lastrowid

    # -- jobs ------------------------------------------------------------------------------------------
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
