"""Issue 23, item 1: one oversized MQTT message must not stop ingest, at this start or the next.

A 64 MiB and a 200 MiB QoS 1 payload are published at a real agent process held to 256 MiB by a real memory
cgroup (the unit's MemoryMax=256M), on a broker without a packet limit (the agent's own bound is under test; the
shipped broker configs add one). Before the fix paho read the whole packet and the dead-letter entry copied it
several times: the kernel killed the agent before it acknowledged, and the broker redelivered it at every restart.
Now both are dead-lettered with a short excerpt and their size, acknowledged (a restart does not see them again),
and the good messages around them are stored.
"""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest

from tests.helpers.agent import ROOT, count, spawn_agent, wait_for, write_config
from tools.cgroup import MemoryLimit
from tools.publish import Publisher, seed_message
from tools.services import MAX_PACKET_SIZE, Mosquitto

T = datetime(2023, 3, 1, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024
LIMIT = 256 * MIB  # ansible/roles/edge_agent: MemoryMax=256M


def good(i: int) -> tuple[str, bytes]:
    return seed_message("m1", "e", "EnergyMeter", T + timedelta(seconds=i), {"Power": float(i)})


def dead_letters(tmp_path) -> list[dict]:
    path = tmp_path / "state" / "deadletter.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.skipif(bool(MemoryLimit.unavailable()), reason=str(MemoryLimit.unavailable()))
def test_oversized_messages_under_a_real_memory_limit(tmp_path, influxd_session, influx_db_name):
    with Mosquitto(tmp_path / "mosquitto", max_packet_size=0) as broker, MemoryLimit(LIMIT) as cgroup:
        cfg = write_config(tmp_path, broker.port, influxd_session.url, influx_db_name,
                           client_id=f"agent-{influx_db_name}")
        agent = spawn_agent(cfg, wrap=cgroup.command)
        pub = Publisher("127.0.0.1", broker.port, client_id=f"pub-{influx_db_name}", max_inflight=10)
        try:
            wait_for(lambda: (tmp_path / "state" / "agent.log").exists()
                     and "MQTT connected" in (tmp_path / "state" / "agent.log").read_text(), timeout=30)
            head = b'{"FeatureType": "EnergyMeter", "pad": "'
            big = [("hack/m1/e", head + b"x" * (n - len(head) - 2) + b'"}') for n in (64 * MIB, 200 * MIB)]
            pub.publish_all([good(0), big[0], good(1), big[1], good(2)], timeout=120)
            del big
            wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == 3
                     and len(dead_letters(tmp_path)) == 2, timeout=120, interval=0.5)
            assert agent.poll() is None, "the agent died"
            assert cgroup.oom_kills() == 0
            entries = dead_letters(tmp_path)
            assert [e["reason"] for e in entries] == ["too_large", "too_large"]
            assert [e["payload_bytes"] for e in entries] == [64 * MIB, 200 * MIB]
            assert all(e["payload_truncated"] and e["payload"].startswith('{"FeatureType"')
                       and len(e["payload"]) <= 1024 for e in entries)
            assert (tmp_path / "state" / "deadletter.jsonl").stat().st_size < 8192
            peak = cgroup.peak_bytes()
            assert peak is None or peak < 160 * MIB, peak  # far from the limit: the payloads were never held

            # acknowledged: a restart gets only what is new, not the oversized messages again
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
            agent = spawn_agent(cfg, wrap=cgroup.command)
            pub.publish_all([good(3)])
            wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == 4, timeout=60)
            assert len(dead_letters(tmp_path)) == 2
            assert agent.poll() is None and cgroup.oom_kills() == 0
        finally:
            pub.close()
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                agent.wait(30)


def test_shipped_brokers_disconnect_a_client_that_sends_an_oversized_packet(tmp_path, mosquitto_session):
    """The broker's own limit, as Ansible, compose and tools/services.py ship it: the sender of a packet over
    1 MiB is disconnected, the message goes nowhere, and the broker serves the next client."""
    for path in ("ansible/roles/mosquitto/templates/home-energy.conf.j2",
                 "edge_agent/examples/compose-mosquitto.conf"):
        assert "max_packet_size" in (ROOT / path).read_text(), path
    assert "mosquitto_max_packet_size: 1048576" in (
        ROOT / "ansible/roles/mosquitto/defaults/main.yml").read_text()
    received = []
    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="oversize-sub")
    sub.on_message = lambda c, u, m: received.append(len(m.payload))
    sub.connect("127.0.0.1", mosquitto_session.port)
    sub.subscribe("big/#", qos=1)
    sub.loop_start()
    dropped = threading.Event()
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="oversize-pub")
    pub.on_disconnect = lambda *a: dropped.set()
    pub.connect("127.0.0.1", mosquitto_session.port)
    pub.loop_start()
    try:
        pub.publish("big/1", b"x" * (MAX_PACKET_SIZE + 1), qos=1)
        assert dropped.wait(10), "the broker kept a client that sent an oversized packet"
        pub.loop_stop()
        ok = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="small-pub")
        ok.connect("127.0.0.1", mosquitto_session.port)
        ok.loop_start()
        ok.publish("big/2", b"y" * 1000, qos=1).wait_for_publish(10)
        wait_for(lambda: received == [1000], timeout=10)
        ok.loop_stop()
    finally:
        sub.loop_stop()
