"""The model API cannot be used to exhaust the agent: idle and slow connections are capped and dropped, request
heads are size-limited, ingest keeps storing while someone floods the API (issue 13, item 3)."""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import psutil
import pytest

from shared.agent_client import AgentClient, ApiError
from tests.helpers.agent import ROOT, count, start_agent, wait_for
from tests.helpers.models import TOKEN, agent_config
from tools.publish import Publisher, seed_message
from tools.services import free_port

TIMEOUT_S = 2
MAX_CONNECTIONS = 8
LIMITS = f"timeout_s = {TIMEOUT_S}\nmax_connections = {MAX_CONNECTIONS}\n"
NOFILE = 128  # the agent's open-file limit in the flood test (it needs ~15): far fewer than the idle connections
IDLE = 400


def _spawn_with_nofile(cfg, nofile: int) -> subprocess.Popen:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limit)


def _up(client: AgentClient) -> bool:
    try:
        client.status()
        return True
    except ApiError:
        return False


def _open_idle(port: int, n: int, first_line: bytes = b"GET /api/v1/status HTTP/1.1\r\n") -> list[socket.socket]:
    """n connections that send one request line and then nothing (bounded: stops after 30 s)."""
    socks: list[socket.socket] = []
    deadline = time.monotonic() + 30
    while len(socks) < n and time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            continue
        with contextlib.suppress(OSError):
            s.sendall(first_line)
        socks.append(s)
    return socks


def _api_sockets(agent: psutil.Process, port: int) -> list:
    """The agent's TCP sockets on the API's port other than the listening one."""
    return [c for c in agent.net_connections(kind="tcp") if c.laddr and c.laddr.port == port
            and c.status != psutil.CONN_LISTEN]


def _closed_by_peer(socks: list[socket.socket], within: float) -> list[socket.socket]:
    """Wait until the agent closed every socket (EOF or reset); returns those still open after `within` s."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    deadline = time.monotonic() + within
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                open_.discard(s)
    sel.close()
    return list(open_)


def test_idle_connection_flood_leaves_api_and_ingest_working(tmp_path, mosquitto_session, influxd_session,
                                                             influx_db_name, server_keys):
    port = free_port()
    cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys,
                       api_extra=LIMITS)
    cfg.write_text(cfg.read_text().replace("port = 0", f"port = {port}"))
    proc = _spawn_with_nofile(cfg, NOFILE)
    client = AgentClient(f"http://127.0.0.1:{port}", TOKEN, timeout=5)
    idle: list[socket.socket] = []
    pub = None
    try:
        wait_for(lambda: _up(client), timeout=60)
        agent = psutil.Process(proc.pid)
        # warm up: the database connections (ingest's, the forecast's) are opened on first use, not by the flood
        pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
        t = datetime(2023, 3, 1, 11, 0, tzinfo=UTC)
        pub.publish_all([seed_message("m0", "e", "EnergyMeter", t, {"Power": 1.0})])
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == 1, timeout=20)
        client.forecast_now()
        fds_before, rss_before = agent.num_fds(), agent.memory_info().rss

        idle = _open_idle(port, IDLE)
        time.sleep(0.3)  # let the agent accept what is in its backlog

        # ingest keeps storing while the idle connections are held open
        pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
        t = datetime(2023, 3, 1, 12, 0, tzinfo=UTC)
        pub.publish_all([seed_message("m1", "e", "EnergyMeter", t.replace(minute=i), {"Power": float(i)})
                         for i in range(3)])
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == 4, timeout=20)

        t0 = time.monotonic()
        st = client.status()  # an authorized request gets through the flood, within the client's timeout
        assert st["models"]["cnn-1"] == {"active": None, "previous": None}
        assert time.monotonic() - t0 < 5

        fds_flooded, rss_flooded = agent.num_fds(), agent.memory_info().rss
        print(f"agent fds {fds_before} -> {fds_flooded}, RSS {rss_before / 2**20:.1f} -> "
              f"{rss_flooded / 2**20:.1f} MiB with {len(idle)} idle connections")
        assert len(idle) == IDLE  # every connection was accepted by the kernel (none waits on a full backlog)
        assert fds_flooded <= fds_before + 2 * MAX_CONNECTIONS + 4

        # every idle connection is closed by the agent: evicted by newer ones, or after timeout_s
        still_open = _closed_by_peer(idle, within=TIMEOUT_S + 3)
        assert not still_open, f"{len(still_open)} idle connections still open after {TIMEOUT_S + 3} s"
        # and the agent holds none of them any more: no socket on the API's port but the listener (the agent's
        # other descriptors may differ by a few: a forecast cycle's database connection, say — CI saw 18 -> 21)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not _api_sockets(agent, port), timeout=5)
        assert not _api_sockets(agent, port), _api_sockets(agent, port)
        assert agent.num_fds() <= fds_before + 6
        assert proc.poll() is None
        counters = client.status()["counters"]
        # each closed by the agent and counted: evicted by a newer one, refused while the evicted were still being
        # closed, or timed out (on a busy machine, CI's, 358 of 400 were evicted and the rest refused or timed out)
        closed = sum(counters.get(k, 0) for k in ("api_connections_evicted", "api_connections_refused",
                                                  "api_timeouts"))
        assert closed >= IDLE - 2 * MAX_CONNECTIONS, counters
        assert counters["api_connections_evicted"] >= IDLE // 2, counters  # eviction makes the room, not timeouts
    finally:
        for s in idle:
            s.close()
        if pub:
            pub.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def limited_agent(request, tmp_path, mosquitto_session, influxd_session, influx_db_name, server_keys):
    """An in-process agent with the API only; `timeout_s` from the test's parametrization (default TIMEOUT_S)."""
    timeout_s = getattr(request, "param", TIMEOUT_S)
    cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys,
                       api_extra=f"timeout_s = {timeout_s}\nmax_connections = {MAX_CONNECTIONS}\n"
                                 "max_header_bytes = 4096\n")
    agent = start_agent(cfg, components=("api",))
    yield agent
    agent.stop()


def _port(agent) -> int:
    return agent.components["api"].server.server_address[1]


def _exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, return everything the agent answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_oversized_request_heads_are_refused(limited_agent):
    port = _port(limited_agent)
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(100))  # ~11 KB of headers
    answer = _exchange(port, b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    answer = _exchange(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    client = AgentClient(limited_agent.components["api"].url, TOKEN, timeout=5)
    assert client.status()["agent_version"]


def test_a_trickling_client_is_dropped_at_the_head_deadline(limited_agent):
    """A client that sends a byte every half second is never silent for timeout_s, yet is dropped."""
    port = _port(limited_agent)
    t0 = time.monotonic()
    closed_after = None
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        for b in b"GET /api/v1/status HTTP/1.1\r\nX-Slow: " + b"a" * 40:
            try:
                s.sendall(bytes([b]))
                time.sleep(0.25)
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        closed_after = time.monotonic() - t0
                        break
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            except OSError:
                closed_after = time.monotonic() - t0
                break
    assert closed_after is not None, "the trickling connection was never closed"
    assert closed_after < TIMEOUT_S + 1.5


@pytest.mark.parametrize("limited_agent", [30], indirect=True)
def test_connections_beyond_the_cap_evict_the_oldest_idle_one(limited_agent):
    port = _port(limited_agent)
    idle = _open_idle(port, MAX_CONNECTIONS)
    try:
        time.sleep(0.2)
        newer = _open_idle(port, 3)
        # the three oldest are closed at once (timeout_s is 30 s here); the others stay open
        assert not _closed_by_peer(idle[:3], within=2.0)
        assert len(_closed_by_peer(idle[3:], within=0.5)) == MAX_CONNECTIONS - 3
        client = AgentClient(limited_agent.components["api"].url, TOKEN, timeout=5)
        assert client.status()["counters"]["api_connections_evicted"] >= 3
        for s in newer:
            s.close()
    finally:
        for s in idle:
            s.close()
