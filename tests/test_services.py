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
