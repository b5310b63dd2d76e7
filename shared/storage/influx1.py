"""InfluxDB 1.x: `/write` with line protocol, `/query` with InfluxQL, over one keep-alive HTTP connection."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.points import Point, escape_measurement, to_lines
from shared.schema import KEPT_MEASUREMENTS
from shared.storage.base import StorageConfig, StorageError

log = logging.getLogger(__name__)


def _rfc3339(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("naive datetime: use timezone-aware UTC datetimes")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _abort(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    """The request's deadline passed: shut its socket down, so the blocked send or receive returns at once."""
    expired.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Influx1Storage:
    """Thread-safe (one lock around the connection); reconnects after any connection error."""

    def __init__(self, config: StorageConfig):
        self.config = config
        parsed = urllib.parse.urlsplit(config.url)
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"storage.url must be http(s)://host:port, got {config.url!r}")
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 8086
        self._prefix = parsed.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._headers = {}
        if config.username:
            cred = f"{config.username}:{config.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        self._db_ready = False
        # line-protocol prefixes of what lasts (routed to the keep policy when one is set)
        self._kept = tuple(escape_measurement(m).encode() for m in sorted(KEPT_MEASUREMENTS))

    # -- retention policies ----------------------------------------------------------------------------------
    def policy(self, measurement: str) -> str | None:
        """The retention policy a measurement is written to and read from (None: the database's default)."""
        if self.config.keep_policy and measurement in KEPT_MEASUREMENTS:
            return self.config.keep_policy
        return self.config.retention_policy

    def source(self, measurement: str) -> str:
        rp = self.policy(measurement)
        if rp:
            return f"{quote_ident(self.config.database)}.{quote_ident(rp)}.{quote_ident(measurement)}"
        return quote_ident(measurement)

    def _is_kept(self, line: bytes) -> bool:
        return any(line.startswith(p) and line[len(p):len(p) + 1] in (b",", b" ") for p in self._kept)

    # -- HTTP --------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, params: dict, body: bytes | None = None,
                 content_type: str | None = None) -> tuple[int, bytes]:
        """One HTTP exchange, whole within `deadline_s`: the socket timeout restarts with every byte, so a server
        that sends one byte every few seconds would otherwise hold the caller (the drainer) for ever."""
        url = f"{self._prefix}{path}?{urllib.parse.urlencode(params)}"
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                    self._conn = cls(self._host, self._port, timeout=self.config.timeout_s)
                conn = self._conn
                expired = threading.Event()
                timer = threading.Timer(self.config.deadline_s, _abort, (conn, expired))
                timer.daemon = True
                timer.start()
                try:
                    conn.request(method, url, body=body, headers=headers)
                    resp = conn.getresponse()
                    return resp.status, resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    if expired.is_set():
                        raise StorageError(f"InfluxDB at {self.config.url} did not answer within "
                                           f"{self.config.deadline_s:g} s (storage.deadline_s)") from None
                    # A kept-alive connection may have been closed by the server: retry once on a fresh one.
                    if attempt == 2:
                        raise StorageError(f"InfluxDB at {self.config.url} unreachable: {exc}") from None
                finally:
                    timer.cancel()
        raise AssertionError("unreachable")

    @staticmethod
    def _error_text(body: bytes) -> str:
        try:
            return json.loads(body).get("error", body.decode(errors="replace"))
        except ValueError:
            return body.decode(errors="replace")[:500]

    # -- interface ---------------------------------------------------------------------------------------
    def ensure_database(self) -> None:
        if self._db_ready or not self.config.create_database:
            return
        status, body = self._request("POST", "/query", {"q": f"CREATE DATABASE {quote_ident(self.config.database)}"})
        if status >= 300:
            raise StorageError(f"cannot create database {self.config.database!r}: {self._error_text(body)}",
                               retryable=status >= 500, status=status)
        self._db_ready = True

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        if not self.config.keep_policy:
            self.write_lines(to_lines(list(points)))
            return
        kept = [p for p in points if p.measurement in KEPT_MEASUREMENTS]
        raw = [p for p in points if p.measurement not in KEPT_MEASUREMENTS]
        if raw:
            self._write(to_lines(raw), self.config.retention_policy)
        if kept:
            self._write(to_lines(kept), self.config.keep_policy)

    def write_lines(self, body: bytes) -> None:
        """Write a line-protocol body (one point per line); lines of what lasts go to the keep policy."""
        if self.config.keep_policy and any(p in body for p in self._kept):
            lines = body.splitlines(keepends=True)
            kept = [line for line in lines if self._is_kept(line)]
            if kept:  # what lasts first: a raw part refused as too old must not keep it from being stored
                self._write(b"".join(kept), self.config.keep_policy)
                raw = [line for line in lines if not self._is_kept(line)]
                if raw:
                    self._write(b"".join(raw), self.config.retention_policy)
                return
        self._write(body, self.config.retention_policy)

    def _write(self, body: bytes, rp: str | None) -> None:
        self.ensure_database()
        params = {"db": self.config.database, "precision": "ns"}
        if rp:
            params["rp"] = rp
        status, answer = self._request("POST", "/write", params, body, "text/plain; charset=utf-8")
        if status == 204:
            return
        if status == 404 and self.config.create_database:
            self._db_ready = False  # database dropped behind our back: create it and retry once
            self.ensure_database()
            status, answer = self._request("POST", "/write", params, body)
            if status == 204:
                return
        # 400: parse/type conflict (bad data, retrying cannot help); 401/403: credentials; 5xx: server trouble.
        raise StorageError(f"write failed ({status}): {self._error_text(answer)}",
                           retryable=status >= 500 or status in (401, 403, 404, 429), status=status)

    def query(self, text: str) -> list[dict]:
        """Run InfluxQL; rows as dicts with a `time` (ns) key and the series' tags merged in."""
        status, body = self._request("POST", "/query", {"db": self.config.database, "q": text, "epoch": "ns"})
        if status >= 300:
            raise StorageError(f"query failed ({status}): {self._error_text(body)}",
                               retryable=status >= 500, status=status)
        doc = json.loads(body)
        rows: list[dict] = []
        errors = [r for r in doc.get("results", []) if "error" in r]
        if errors:
            first = next((r for r in errors if r["error"] != "not executed"), errors[0])
            # nothing written yet (the database is created with the first write): no rows. InfluxDB answers a
            # multi-statement query on a missing database with only "not executed".
            missing_db = first["error"] == "not executed" or first["error"].startswith("database not found")
            if missing_db and not self._database_exists():
                return []
            # later statements of a request only say "not executed": report the one that failed
            raise StorageError(f"query error (statement {first.get('statement_id')}): {first['error']}",
                               retryable=False)
        for result in doc.get("results", []):
            for series in result.get("series", []) or []:
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=False))
                    row.update(tags)
                    row.setdefault("_measurement", series.get("name"))
                    rows.append(row)
        return rows

    def _database_exists(self) -> bool:
        status, body = self._request("POST", "/query", {"q": "SHOW DATABASES"})
        if status >= 300:
            return True  # cannot tell: let the original error stand
        names = [v[0] for r in json.loads(body).get("results", []) for s in r.get("series", []) or []
                 for v in s.get("values", [])]
        return self.config.database in names

    def query_series(self, measurement: str, field: str, start: datetime, end: datetime,
                     tags: dict[str, str] | None = None) -> list[tuple[int, float]]:
        where = [f"time >= '{_rfc3339(start)}'", f"time < '{_rfc3339(end)}'"]
        where += [f"{quote_ident(k)} = {quote_str(v)}" for k, v in (tags or {}).items()]
        q = (f"SELECT {quote_ident(field)} FROM {self.source(measurement)} WHERE {' AND '.join(where)} "
             f"ORDER BY time ASC")
        out = []
        for row in self.query(q):
            value = row.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append((int(row["time"]), float(value)))
        return out

    def readings_near(self, measurement: str, field: str, tags: dict[str, str] | None, boundaries_ns: list[int],
                      window_ns: int) -> list[tuple[int, float]]:
        """Two selector statements per boundary, sent as one request (a selector without GROUP BY time returns
        the time of the reading it selects)."""
        cond = "".join(f" AND {quote_ident(k)} = {quote_str(v)}" for k, v in (tags or {}).items())
        src = self.source(measurement)
        f = quote_ident(field)
        statements = []
        for b in boundaries_ns:
            statements.append(f"SELECT last({f}) FROM {src} WHERE time <= {b} AND time > {b - window_ns}{cond}")
            statements.append(f"SELECT first({f}) FROM {src} WHERE time > {b} AND time <= {b + window_ns}{cond}")
        out: set[tuple[int, float]] = set()
        for k in range(0, len(statements), 200):
            for row in self.query("; ".join(statements[k:k + 200])):
                value = row.get("last", row.get("first"))
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out.add((int(row["time"]), float(value)))
        return sorted(out)

    def delete_points(self, measurement: str, times_ns: list[int]) -> None:
        statements = [f"DELETE FROM {quote_ident(measurement)} WHERE time = {int(t)}" for t in times_ns]
        for k in range(0, len(statements), 200):
            status, body = self._request("POST", "/query", {"db": self.config.database,
                                                            "q": "; ".join(statements[k:k + 200])})
            if status >= 300:
                raise StorageError(f"delete failed ({status}): {self._error_text(body)}",
                                   retryable=status >= 500, status=status)

    def ping(self) -> bool:
        try:
            status, _ = self._request("GET", "/ping", {})
            return status == 204
        except StorageError:
            return False

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
