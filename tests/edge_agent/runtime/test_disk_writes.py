"""The agent reports its own disk writes (issue 24): `bytes_written_per_day` in the health values, the status API's
counters, the `agent` measurement and a Home Assistant sensor."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt

from edge_agent.publish import hass
from edge_agent.runtime.health import DiskWrites, Health, process_write_bytes
from tests.helpers.agent import count, start_agent, wait_for, write_config


def test_the_rate_is_taken_over_the_last_day():
    values = iter([1000, 1000 + 5_000, 1000 + 86_400_000, 1000 + 86_400_000 + 1_000_000])
    disk, health = DiskWrites(source=lambda: next(values), min_span_s=60), Health()
    disk.sample(health, now=0.0)
    disk.sample(health, now=30.0)
    assert health.get("bytes_written") == 5_000 and health.get("bytes_written_per_day") == 0  # too early
    disk.sample(health, now=86_400.0)
    assert health.get("bytes_written_per_day") == 86_400_000  # 1,000 bytes a second
    assert health.get("bytes_written_span_s") == 86_400
    disk.sample(health, now=2 * 86_400.0)  # the first day falls out of the window
    assert health.get("bytes_written_per_day") == 1_000_000
    assert process_write_bytes("/proc/self/io") is not None
    assert process_write_bytes("/nonexistent/io") is None


def test_the_agent_reports_it_in_status_database_and_home_assistant(tmp_path, mosquitto_session, influxd_session,
                                                                     influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}",
                       extra=f'[publish]\ntopic_prefix = "disk-{influx_db_name}"\nnode_id = "disk_test"')
    seen: dict[str, dict] = {}
    got = threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-{influx_db_name}")

    def on_message(c, u, msg):
        try:
            seen[msg.topic] = json.loads(msg.payload) if msg.payload else {}
        except ValueError:  # the availability topic says online/offline
            return
        if "bytes_written_per_day" in seen.get(hass.health_topic(f"disk-{influx_db_name}"), {}):
            got.set()

    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(f"disk-{influx_db_name}/#", 1),
                                                                 ("homeassistant/device/disk_test/config", 1)])
    client.connect("127.0.0.1", mosquitto_session.port)
    client.loop_start()
    agent = start_agent(cfg)
    try:
        assert got.wait(30)
        assert agent.health.snapshot()["bytes_written_per_day"] >= 0  # the status API's counters are this snapshot
        config = wait_for(lambda: seen.get("homeassistant/device/disk_test/config"))["cmps"]["disk_writes_per_day"]
        assert config["state_topic"] == f"disk-{influx_db_name}/agent/health" and config["unit_of_measurement"] == "MB"
        wait_for(lambda: count(influxd_session, influx_db_name, "agent", "bytes_written_per_day") > 0, timeout=20)
    finally:
        agent.stop()
        client.disconnect()
        client.loop_stop()
