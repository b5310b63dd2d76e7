"""Fault tests: every published QoS 1 message is stored exactly once with its value.

influxd stopped for 10 s mid-stream; mosquitto restarted mid-stream; the agent SIGKILLed mid-stream and restarted.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers.agent import count, spawn_agent, start_agent, wait_for, write_config
from tools.publish import Publisher, seed_message
from tools.services import Influxd, Mosquitto

N = 3000
T0 = datetime(2023, 1, 1, tzinfo=UTC)


def messages(n: int = N):
    for i in range(n):
        yield seed_message("m1", "energy", "EnergyMeter", T0 + timedelta(seconds=i), {"EnergyIn": float(i)})


def paced(n: int, fault_at: int, fault: threading.Event, rate: float = 1500.0):
    """Messages at about `rate` per second; sets `fault` when `fault_at` have been handed out."""
    start = time.monotonic()
    for i, m in enumerate(messages(n)):
        if i == fault_at:
            fault.set()
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield m


def assert_all_stored_once(influxd, db: str, timeout: float = 60) -> None:
    wait_for(lambda: count(influxd, db, "EnergyMeter", "EnergyIn") >= N, timeout=timeout, interval=0.5)
    res = influxd.query('SELECT count("EnergyIn"), sum("EnergyIn"), min("EnergyIn"), max("EnergyIn") '
                        'FROM "EnergyMeter"', db=db)["results"][0]["series"][0]["values"][0]
    assert res[1:] == [N, N * (N - 1) / 2, 0.0, float(N - 1)]
    # every value sits at its own timestamp: value i at T0 + i s
    rows = influxd.query('SELECT "EnergyIn" FROM "EnergyMeter"', db=db)["results"][0]["series"][0]["values"]
    t0 = int(T0.timestamp()) * 10**9
    assert all(v == (t - t0) / 1e9 for t, v in rows)


def publish_in_background(port: int, gen, client_id: str):
    pub = Publisher("127.0.0.1", port, client_id=client_id, max_inflight=200)
    result: dict = {}

    def run():
        try:
            result["sent"] = pub.publish_all(gen, timeout=120)
        except Exception as exc:  # surfaced by the test
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return pub, t, result


def test_influxd_down_for_10_seconds(tmp_path, mosquitto_session):
    with Influxd(tmp_path / "db") as db:
        cfg = write_config(tmp_path, mosquitto_session.port, db.url, "faults", client_id="agent-influx-down")
        agent = start_agent(cfg)
        fault = threading.Event()
        pub, thread, result = publish_in_background(mosquitto_session.port, paced(N, N // 3, fault), "pub-influx")
        try:
            assert fault.wait(30)
            db.stop()
            time.sleep(10)
            assert agent.ingest.spool.pending_points > 0  # it grew on disk meanwhile
            assert agent.health.get("retries") > 0
            db.start()
            thread.join(120)
            assert result.get("sent") == N, result
            assert_all_stored_once(db, "faults")
            wait_for(lambda: agent.ingest.spool.pending_points == 0, timeout=20)
        finally:
            pub.close()
            agent.stop()


def test_mosquitto_restarted_mid_stream(tmp_path, influxd_session, influx_db_name):
    with Mosquitto(tmp_path / "broker", persistence=True) as broker:
        cfg = write_config(tmp_path, broker.port, influxd_session.url, influx_db_name, client_id="agent-mq-restart")
        agent = start_agent(cfg)
        fault = threading.Event()
        pub, thread, result = publish_in_background(broker.port, paced(N, N // 2, fault), "pub-mq-restart")
        try:
            assert fault.wait(30)
            broker.restart()
            thread.join(120)
            assert result.get("sent") == N, result
            assert_all_stored_once(influxd_session, influx_db_name)
            assert agent.health.get("mqtt_disconnects") >= 1
        finally:
            pub.close()
            agent.stop()


@pytest.mark.timeout(180)
def test_agent_sigkilled_and_restarted(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id="agent-sigkill")
    proc = spawn_agent(cfg)
    try:
        # the first run subscribes (persistent session) before anything is published
        wait_for(lambda: "subscribed" in (tmp_path / "state" / "agent.log").read_text()
                 if (tmp_path / "state" / "agent.log").exists() else False, timeout=30)
        fault = threading.Event()
        pub, thread, result = publish_in_background(mosquitto_session.port, paced(N, N // 2, fault), "pub-kill")
        assert fault.wait(30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(1)
        proc = spawn_agent(cfg)
        thread.join(120)
        assert result.get("sent") == N, result
        assert_all_stored_once(influxd_session, influx_db_name)
        pub.close()
    finally:
        proc.terminate()
        proc.wait(20)
