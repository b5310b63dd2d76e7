"""Never a live process that silently stores nothing: supervised worker threads, the systemd watchdog, a full
disk, the dead-letter file's rotation — all against the real agent, broker and influxd."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from edge_agent.ingest.deadletter import DeadLetter
from edge_agent.runtime.supervise import Worker
from shared.storage import open_storage
from tests.helpers.agent import count, spawn_agent, start_agent, wait_for, write_config
from tools.publish import Publisher, seed_message
from tools.services import Influxd, free_port

T = datetime(2023, 4, 1, tzinfo=UTC)


def spool_only(agent) -> None:
    """Every group through the spool, as while the database is away: the agent's direct writes go to a port where
    no database listens (the drainer still writes to the real one)."""
    dead = dataclasses.replace(agent.config.storage, url=f"http://127.0.0.1:{free_port()}", timeout_s=1)
    agent.ingest.direct = open_storage(dead)


def msgs(start: int, n: int):
    return [seed_message("m1", "e", "EnergyMeter", T + timedelta(seconds=i), {"EnergyIn": float(i)})
            for i in range(start, start + n)]


def test_drainer_survives_running_out_of_file_descriptors(tmp_path, mosquitto_session, influxd_session,
                                                          influx_db_name):
    """Issue 13: at the open-file limit the drainer died in Spool.peek and nothing more was stored."""
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    agent = start_agent(cfg)
    spool_only(agent)  # the drainer opens segments: the step that failed at the limit
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hogs: list[int] = []
    try:
        pub.publish_all(msgs(0, 50))
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == 50)
        in_use = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 16, hard))
        sent = 50

        def drainer_restarted() -> bool:
            # Other threads of this process (an HTTP connection collected, a query closed) free descriptors at
            # any time; the drainer, opening a segment once per batch, may win one and drain. So: take every
            # free descriptor again and spool more (on the spool's open file) until peek has failed once.
            nonlocal sent
            try:
                while True:
                    hogs.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            if agent.health.get("thread_restarts_drainer") >= 1:
                return True
            pub.publish_all(msgs(sent, 10))
            sent += 10
            return False

        wait_for(drainer_restarted, timeout=30)
    finally:
        for fd in hogs:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == sent, timeout=60)
        assert all(t.is_alive() for t in agent.ingest.threads)
        assert agent.problem() is None
    finally:
        pub.close()
        agent.stop()


def test_worker_restarts_with_backoff_then_gives_up():
    stop = threading.Event()
    runs: list[float] = []
    fatal: list[str] = []

    def loop():
        runs.append(time.monotonic())
        raise OSError("disk on fire")

    w = Worker("w", loop, stop, on_fatal=fatal.append, max_failures=4, max_backoff_s=0.4)
    w.start()
    w.join(10)
    assert fatal == ["w"] and w.fatal and len(runs) == 4
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert gaps[0] >= 0.9 and all(g <= 1.6 for g in gaps)  # backoff 1 s, then capped at 0.4 s
    # a loop that runs long enough between failures is never given up on
    stop2, n = threading.Event(), []

    def flaky():
        n.append(1)
        if len(n) < 6:
            time.sleep(0.06)
            raise RuntimeError("transient")
        stop2.wait()

    w2 = Worker("w2", flaky, stop2, max_failures=2, healthy_run_s=0.05, max_backoff_s=0.01)
    w2.start()
    wait_for(lambda: len(n) == 6, timeout=15)
    assert w2.is_alive() and not w2.fatal
    stop2.set()
    w2.join(5)


def test_agent_exits_non_zero_when_a_worker_gives_up(tmp_path, mosquitto_session, influxd_session,
                                                      influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    agent = start_agent(cfg)
    spool_only(agent)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    agent.ingest.drainer.max_failures, agent.ingest.drainer.max_backoff_s = 2, 0.05
    spool = tmp_path / "state" / "spool"
    try:
        with agent.ingest.spool._lock:  # swap the spool's directory for a file under the drainer's feet
            shutil.move(spool, tmp_path / "spool.moved")
            spool.write_text("not a directory")
        os.dup2(os.open(tmp_path / "spool.moved" / f"{1:012d}.seg", os.O_WRONLY | os.O_APPEND),
                agent.ingest.spool._fd)
        pub.publish_all(msgs(0, 5))
        wait_for(lambda: agent.exit_code == 70, timeout=20)
        assert agent.problem() == "a worker thread gave up"
    finally:
        pub.close()
        agent.stop()


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket that collects what the agent sends."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> list[str]:
        end, got = time.monotonic() + seconds, []
        while time.monotonic() < end:
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        self.messages += [(time.monotonic(), m) for m in got]
        return got

    def close(self):
        self.sock.close()


def test_watchdog_beats_only_while_ingest_makes_progress(tmp_path, monkeypatch, mosquitto_session,
                                                         influxd_session, influx_db_name):
    sock = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2: beats every 0.5 s, stale after 5 s
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    agent = start_agent(cfg)
    spool_only(agent)  # so that a hung disk stops ingest
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        first = sock.collect(2.0)
        assert "READY=1" in first and first.count("WATCHDOG=1") >= 2
        with agent.ingest.spool._lock:  # a hung disk: spooler and drainer block on the spool
            pub.publish_all(msgs(0, 3))
            time.sleep(6)  # past the stale threshold
            sock.collect(0.3)  # what was sent before the stall
            assert sock.collect(2.0).count("WATCHDOG=1") == 0
            assert "made no progress" in (agent.problem() or "")
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == 3, timeout=20)
        assert sock.collect(1.5).count("WATCHDOG=1") >= 2
    finally:
        pub.close()
        agent.stop()
    assert "STOPPING=1" in sock.collect(0.5)
    sock.close()


def test_watchdog_protocol_from_the_real_process(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    sock = NotifySocket(tmp_path / "notify")
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    env_extra = {"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "1000000"}
    proc = spawn_agent(cfg, env_extra)
    try:
        got = []
        deadline = time.monotonic() + 30
        while got.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
            got += sock.collect(0.5)
        assert got[0] == "READY=1" and got.count("WATCHDOG=1") >= 3, got
        proc.terminate()
        assert proc.wait(30) == 0
        assert "STOPPING=1" in sock.collect(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_deadletter_rotation_keeps_n_files_and_counts_what_it_deletes(tmp_path):
    deleted: list[int] = []
    dl = DeadLetter(tmp_path / "dl.jsonl", max_bytes=600, keep=2, on_deleted=deleted.append)
    for i in range(40):
        dl.write([DeadLetter.entry("t", f"payload {i}".encode(), "not_json", "x" * 50, None)])
    dl.close()
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dl.jsonl"))
    assert files == ["dl.jsonl", "dl.jsonl.1", "dl.jsonl.2", "dl.jsonl.deleted"]
    kept = sum(len(p.read_text().splitlines()) for p in tmp_path.glob("dl.jsonl*") if not p.name.endswith("deleted"))
    assert kept + sum(deleted) == 40 and sum(deleted) > 0
    assert int((tmp_path / "dl.jsonl.deleted").read_text()) == sum(deleted)
    assert oct((tmp_path / "dl.jsonl").stat().st_mode & 0o777) == "0o600"
    # a restart keeps counting from the total on disk
    dl = DeadLetter(tmp_path / "dl.jsonl", max_bytes=600, keep=2)
    assert dl.deleted_total() == sum(deleted)
    payloads = [json.loads(x)["payload"] for x in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert payloads[-1] == "payload 39"
    dl.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs for the spool needs root")
def test_disk_full_holds_messages_and_loses_none(tmp_path, mosquitto_session):
    """The spool's disk fills up while the database is down: messages stay unacknowledged (the broker keeps
    them), nothing half-written is read back, and every message is stored exactly once afterwards."""
    spool = tmp_path / "spool-fs"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(spool)], check=True)
    n = 3000  # about 300 KB of line protocol
    try:
        with Influxd(tmp_path / "db") as db:
            cfg = write_config(tmp_path, mosquitto_session.port, db.url, "diskfull",
                               client_id="agent-diskfull",
                               spool=f'dir = "{spool}"\nsegment_bytes = 16384\nmax_bytes = 100000000')
            agent = start_agent(cfg)
            pub = Publisher("127.0.0.1", mosquitto_session.port, client_id="pub-diskfull", max_inflight=100)
            try:
                db.stop()
                sender = threading.Thread(target=pub.publish_all, args=(msgs(0, n),), kwargs={"timeout": 120})
                sender.start()
                wait_for(lambda: agent.health.get("spool_write_errors") > 0, timeout=60)
                time.sleep(2)
                held = agent.health.get("received")
                assert held < n and agent.health.get("received") == held  # held, unacknowledged: no progress
                db.start()
                sender.join(120)
                wait_for(lambda: count(db, "diskfull", "EnergyMeter", "EnergyIn") == n, timeout=120, interval=0.5)
                res = db.query('SELECT sum("EnergyIn") FROM "EnergyMeter"', db="diskfull")["results"][0]
                assert res["series"][0]["values"][0][1] == n * (n - 1) / 2
                assert all(t.is_alive() for t in agent.ingest.threads)
            finally:
                pub.close()
                agent.stop()
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)
