"""The problem sensor: the agent judges its own state and publishes it retained for Home Assistant's `problem`
binary sensor, and the status API carries the same list (a real broker, a real influxd)."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.publish import hass
from shared.points import Point
from tests.helpers.agent import wait_for, write_config


class Listener:
    """Collects the retained and live messages of a few topics."""

    def __init__(self, port: int, topics: list[str]):
        self.messages: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="problem-listener")
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", port)
        for t in topics:
            self.client.subscribe(t, qos=1)
        self.client.loop_start()

    def _on(self, client, userdata, msg):
        with self._lock:
            self.messages.setdefault(msg.topic, []).append(msg.payload)

    def last(self, topic: str) -> dict | None:
        with self._lock:
            got = self.messages.get(topic)
        return json.loads(got[-1]) if got else None

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_problems_reach_the_status_and_the_problem_topic(tmp_path, mosquitto_session, influxd_session,
                                                         influx_db_name):
    extra = f"""
[publish]
topic_prefix = "he-problem"
node_id = "probe"
[alerts]
quiet_s = 0
write_budget_mb_per_day = 50
publish_every_s = 10
[backup]
dir = "{tmp_path / 'backups'}"
"""
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, extra=extra,
                       client_id="agent-problems")
    listener = Listener(mosquitto_session.port, ["he-problem/problem", "homeassistant/device/probe/config"])
    agent = Agent(load_config(cfg), components=())
    agent.start()
    try:
        # discovery: a problem binary sensor and a last-backup timestamp sensor on the same topic, in the device
        # config (an ingest-only agent announces just these)
        cmps = wait_for(lambda: listener.last("homeassistant/device/probe/config"))["cmps"]
        assert cmps["problem"]["p"] == "binary_sensor" and cmps["problem"]["device_class"] == "problem"
        assert cmps["problem"]["state_topic"] == "he-problem/problem"
        assert cmps["last_backup"]["device_class"] == "timestamp"

        # [backup] names a destination and there is no backup yet: that alone is the problem
        found = agent.check_problems()
        assert [p["code"] for p in found] == ["backup_stale"]
        msg = wait_for(lambda: listener.last("he-problem/problem"))
        assert msg["problem"] is True and msg["reasons"] == ["backup_stale"] and "no backup" in msg["reason"]

        # a backup two and a half days old is stale too; a fresh one clears it
        state = agent.config.state_dir
        old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60 * 3600))
        (state / "backup.json").write_text(json.dumps({"last_ok": old, "path": "x"}))
        assert "2.5 days" in agent.check_problems()[0]["message"]
        new = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (state / "backup.json").write_text(json.dumps({"last_ok": new, "path": "x"}))
        assert agent.check_problems() == []
        msg = wait_for(lambda: (m := listener.last("he-problem/problem")) and not m["problem"] and m)
        assert msg["reasons"] == [] and msg["last_backup"] == new

        # the write budget: the health value the wear measurement sets (bytes written per day)
        agent.health.set("bytes_written_per_day", 80e6)
        agent.health.set("bytes_written_span_s", 120)  # a start's burst scaled to a day: not judged yet
        assert agent.check_problems() == []
        agent.health.set("bytes_written_span_s", 3600)
        found = agent.check_problems()
        assert [p["code"] for p in found] == ["write_budget_exceeded"] and "80 MB" in found[0]["message"]
        agent.health.set("bytes_written_per_day", 20e6)
        assert agent.check_problems() == []

        # the database goes away: database_down; the spool filling is its own problem
        agent.storage.config.url = "http://127.0.0.1:9"  # a port nothing listens on
        agent.storage.close()
        agent.storage._port = 9
        assert [p["code"] for p in agent.check_problems()] == ["database_down"]
        agent.ingest.spool.append([Point("x", {}, {"v": 1.0}, 1)])  # held: the database is away
        agent.problems.inp.spool_max = 12  # a spool of 12 bytes is more than 80 % full with it
        assert {p["code"] for p in agent.check_problems()} == {"database_down", "spool_filling"}
        assert agent.ctx.status_parts["problems"]() == agent.problems.current
        assert agent.ctx.status_parts["backup"]()["last_ok"] == new
        agent.storage._port = influxd_session.port  # back, so that the stop drains at once
    finally:
        agent.stop()
        listener.close()


def test_quiet_devices_and_a_model_in_the_shadow(tmp_path):
    """The pure checks: no message for quiet_s is ingest_stalled; a shadowed model is model_shadow."""
    from pathlib import Path

    from edge_agent.runtime.problems import AlertsConfig, Inputs, Problems

    now = [1000.0]
    received = [5]
    guard = {"models": {"cnn-1": {"state": "shadow"}, "lstm-1": {"state": "serving"}}}
    p = Problems(AlertsConfig(quiet_s=600, disk_free_ratio=0.0), Inputs(
        stalled=lambda: None, received=lambda: received[0], spool_bytes=lambda: 0, spool_max=100, spool_warn_ratio=0.8,
        db_up=lambda: True, backup=lambda: {}, backup_expected=False, guard=lambda: guard,
        health_value=lambda name: None, paths=[Path(tmp_path)]), clock=lambda: now[0])
    assert [x["code"] for x in p.check()] == ["model_shadow"] and "cnn-1" in p.current[0]["message"]
    guard["models"]["cnn-1"]["state"] = "serving"
    now[0] += 601
    assert [x["code"] for x in p.check()] == ["ingest_stalled"]
    received[0] += 1
    assert p.check() == []
    p.ac.disk_free_ratio = 0.999999  # no real filesystem is that empty
    assert [x["code"] for x in p.check()] == ["disk_filling"]
    assert hass.problem_topic("he") == "he/problem"
