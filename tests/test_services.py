"""The fixtures themselves: both services answer and can be restarted on the same port."""

import socket


def test_influxd_answers_and_restarts(influxd):
    influxd.create_database("x")
    names = [v[0] for v in influxd.query("SHOW DATABASES")["results"][0]["series"][0]["values"]]
    assert "x" in names
    port = influxd.port
    influxd.restart()
    assert influxd.port == port
    names = [v[0] for v in influxd.query("SHOW DATABASES")["results"][0]["series"][0]["values"]]
    assert "x" in names  # data dir survives a restart


def test_mosquitto_accepts_connections(mosquitto):
    with socket.create_connection(("127.0.0.1", mosquitto.port), timeout=2):
        pass
    mosquitto.restart()
    with socket.create_connection(("127.0.0.1", mosquitto.port), timeout=2):
        pass


def test_a_started_service_in_a_with_block_is_not_started_twice(tmp_path):
    """`with start_gunicorn(...) as s` (started, then entered) used to start a second process on the same port; the
    first one outlived the block (gunicorn servers were left running after the server tests)."""
    import psutil

    from tools.services import Mosquitto

    broker = Mosquitto(tmp_path / "m").start()
    first = broker.proc.pid
    with broker as entered:
        assert entered is broker and broker.proc.pid == first
        with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
            pass
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
