"""The model API's HTTP server: http.server's request handling behind limits that an unauthenticated client cannot
get around (issue 13: idle connections to `ThreadingHTTPServer` exhausted the agent's file descriptors and with
them the spool).

- At most `max_connections` connections are open. When all slots are taken, a new connection evicts the oldest one
  that has not yet sent a complete request head (an idle or slow client); only if every slot is serving a request
  is the new one closed at once. One thread per open connection, so never more than 2 × max_connections threads
  (evicted ones exit as soon as their socket is shut down).
- A connection has `timeout_s` from its accept to finish the TLS handshake and send its request line and headers
  (however it trickles them), at most `max_header_bytes` of them; the body must arrive within `body_timeout_s`.
- One request per connection (`Connection: close`): the clients (urllib) open one per request anyway.
- TLS when an `ssl.SSLContext` is given; the handshake runs in the connection's thread, under the same deadline.

We keep http.server rather than a WSGI server: waitress has no TLS and stops accepting at its connection limit
(new clients wait until idle ones time out), cheroot ties a worker thread to every connection that is still
sending its head; both would be extra dependencies on the Pi for ~150 lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 8
    timeout_s: float = 10.0  # accept → request head complete (TLS handshake included); also each send
    body_timeout_s: float = 60.0  # head complete → body read (a 2 MiB bundle over a slow link)
    max_header_bytes: int = 8192  # request line + headers


class HeadTooLarge(Exception):
    pass


class _Conn:
    """An accepted connection; `busy` once its request head is complete (it is no longer evictable)."""

    __slots__ = ("sock", "accepted", "busy", "evicted")

    def __init__(self, sock: socket.socket):
        self.sock, self.accepted, self.busy, self.evicted = sock, time.monotonic(), False, False

    def abort(self) -> None:
        # socket.socket.shutdown, not SSLSocket.shutdown: wakes the thread blocked in recv without touching the
        # TLS state that thread is using.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that stop at a deadline, not only after `idle_s` of silence (a trickling client)."""

    def __init__(self, sock: socket.socket, idle_s: float, deadline: float):
        self.sock, self.idle_s, self.deadline = sock, idle_s, deadline
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise TimeoutError("request deadline passed")
        self.sock.settimeout(min(self.idle_s, left))
        try:
            return self.sock.recv_into(buf)
        except TimeoutError:
            self.timed_out = True
            raise


class _RequestFile(io.BufferedReader):
    """Counts what the request head reads (request line + headers) against a budget, and remembers its last line
    (a head cut short by EOF ends without the blank line: http.server would take it as complete)."""

    head_budget: int | None = None
    last_line: bytes = b""

    def readline(self, size: int | None = -1) -> bytes:
        if self.head_budget is None:
            return super().readline(size)
        cap = self.head_budget + 1
        line = super().readline(cap if size is None or size < 0 else min(size, cap))
        self.head_budget -= len(line)
        if self.head_budget < 0:
            raise HeadTooLarge
        self.last_line = line
        return line


class _Writer(io.RawIOBase):
    def __init__(self, sock: socket.socket, timeout_s: float):
        self.sock, self.timeout_s = sock, timeout_s

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sock.settimeout(self.timeout_s)
        self.sock.sendall(data)
        return len(data)


class LimitedHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler under the server's Limits; errors are JSON like the API's own."""

    protocol_version = "HTTP/1.1"
    sys_version = ""  # no Python version in the Server header
    server: BoundedHTTPServer

    def setup(self) -> None:
        self.conn: _Conn = self.request
        self.connection = self.conn.sock
        limits = self.server.limits
        self._reader = _DeadlineReader(self.connection, limits.timeout_s, self.conn.accepted + limits.timeout_s)
        self.rfile = _RequestFile(self._reader, 16384)
        self.rfile.head_budget = limits.max_header_bytes
        self.wfile = _Writer(self.connection, limits.timeout_s)

    def finish(self) -> None:
        pass  # the server closes the socket

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.rfile.head_budget = None
        if ok and self.rfile.last_line not in (b"\r\n", b"\n"):
            return False  # EOF (or an eviction) before the blank line: nothing to answer, nothing to run
        if ok and not self.server.head_complete(self.conn):
            return False  # evicted while the head came in
        if ok:
            self._reader.deadline = time.monotonic() + self.server.limits.body_timeout_s
        return ok

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
            if self._reader.timed_out:
                self.server.event("api_timeouts")
        except HeadTooLarge:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.server.event("api_heads_too_large")
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                            f"request line and headers exceed {self.server.limits.max_header_bytes} bytes")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        status = HTTPStatus(code)
        body = (json.dumps({"error": {"code": status.phrase.lower().replace(" ", "_").replace("-", "_"),
                                      "message": message or status.description}}) + "\n").encode()
        self.log_error("code %d, message %s", code, message)
        self.send_response(code, status.phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:  # debug level, never headers (the token)
        log.debug("%s %s", self.address_string(), fmt % args)


class BoundedHTTPServer(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 64  # the kernel's accept backlog (no file descriptors of ours)

    def __init__(self, address: tuple[str, int], handler: type[LimitedHandler], limits: Limits,
                 ssl_context: ssl.SSLContext | None = None, on_event: Callable[[str], None] | None = None):
        self.limits, self.ssl_context = limits, ssl_context
        self._on_event = on_event
        self._lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def event(self, name: str) -> None:
        if self._on_event:
            try:
                self._on_event(name)
            except Exception:  # counters must never break serving
                log.exception("model API event callback failed")

    def head_complete(self, conn: _Conn) -> bool:
        """Mark the connection as serving a request (not evictable); False if it was evicted already."""
        with self._lock:
            if conn.evicted:
                return False
            conn.busy = True
            return True

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def process_request(self, request: socket.socket, client_address) -> None:
        conn = _Conn(request)
        refused = False
        with self._lock:
            live = [c for c in self._conns.values() if not c.evicted]
            if len(live) >= self.limits.max_connections:
                idle = [c for c in live if not c.busy]
                if idle and len(self._conns) < 2 * self.limits.max_connections:
                    victim = min(idle, key=lambda c: c.accepted)
                    victim.evicted = True
                    victim.abort()
                else:
                    refused = True
            if not refused:
                self._conns[id(conn)] = conn
        if refused:
            self.event("api_connections_refused")
            self.shutdown_request(request)
            return
        if len(live) >= self.limits.max_connections:
            self.event("api_connections_evicted")
        try:
            if self.ssl_context is not None:  # no I/O yet: the handshake runs in the connection's thread
                conn.sock = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            threading.Thread(target=self._serve, args=(conn, client_address), name="model-api-conn",
                             daemon=True).start()
        except (RuntimeError, OSError) as exc:  # no thread to be had, or the peer is gone: drop it, keep serving
            log.debug("model API connection from %s dropped: %s", client_address[0], exc)
            self._forget(conn)

    def _serve(self, conn: _Conn, client_address) -> None:
        try:
            if self.ssl_context is not None:
                conn.sock.settimeout(max(0.001, conn.accepted + self.limits.timeout_s - time.monotonic()))
                conn.sock.do_handshake()
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, ValueError) as exc:  # timeouts, resets, TLS errors, evictions (ssl.SSLError is an OSError)
            if isinstance(exc, TimeoutError):
                self.event("api_timeouts")
            elif isinstance(exc, ssl.SSLError):
                self.event("api_tls_errors")
            log.debug("model API connection from %s ended: %s", client_address[0], exc)
        except Exception:
            log.exception("model API connection from %s failed", client_address[0])
        finally:
            self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.pop(id(conn), None)
        with contextlib.suppress(OSError):
            socket.socket.shutdown(conn.sock, socket.SHUT_WR)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def close_all(self) -> None:
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            c.abort()
