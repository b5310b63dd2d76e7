"""A back-pressured QoS 1 publisher and seed-format messages (tests, benchmarks, the demo's replay).

paho refuses more than 65,535 queued QoS 1 messages (16-bit message ids), and a publisher that outruns the broker
only fills memory, so `publish_all` keeps at most `max_inflight` messages unacknowledged. It uses a persistent
session so that messages in flight survive a broker restart (paho resends them after reconnecting).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

import paho.mqtt.client as mqtt


def seed_message(device: str, channel: str, feature: str, time_: datetime, fields: dict[str, float],
                 device_name: str | None = None, device_type: str | None = None) -> tuple[str, bytes]:
    """(topic, payload) in the hackathon's format: topic hack/<device>/<channel>, FeatureType = measurement."""
    doc: dict = {"FeatureType": feature, "device_id": device, "device_name": device_name or device,
                 "device_type": device_type or feature, "time": time_.astimezone(UTC).isoformat().replace("+00:00", "Z")}
    doc.update(fields)
    return f"hack/{device}/{channel}", json.dumps(doc).encode()


class Publisher:
    def __init__(self, host: str, port: int, client_id: str = "test-publisher", max_inflight: int = 1000,
                 username: str | None = None, password: str | None = None):
        self.max_inflight = max_inflight
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._acked = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(min(max_inflight, 65000))
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self._connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: self._connected.set()
        self.client.on_disconnect = lambda c, u, f, rc, p=None: self._connected.clear()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"publisher could not connect to {host}:{port}")

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        with self._lock:
            self._acked += 1
        with contextlib.suppress(ValueError):  # QoS 0 messages never took a slot
            self._slots.release()

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def publish_all(self, messages: Iterable[tuple[str, bytes]], qos: int = 1,
                    progress: Callable[[int], None] | None = None, timeout: float = 600) -> int:
        """Publish every message (waiting for room in the in-flight window); returns how many were sent,
        after all of them were acknowledged by the broker."""
        sent = 0
        start_acked = self.acked
        for topic, payload in messages:
            if qos > 0 and not self._slots.acquire(timeout=timeout):
                raise TimeoutError("broker stopped acknowledging")
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
            sent += 1
            if progress and sent % 1000 == 0:
                progress(sent)
        if qos > 0:
            deadline = time.monotonic() + timeout
            while self.acked - start_acked < sent:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {self.acked - start_acked} of {sent} acknowledged")
                time.sleep(0.01)
        if progress:
            progress(sent)
        return sent

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def counter_messages(rows: Iterable[tuple[datetime, float]], device: str = "meter-1",
                     name: str = "Hausanschluss") -> Iterator[tuple[str, bytes]]:
    """A grid meter's cumulative import counter (kWh) as EnergyMeter messages."""
    for t, value in rows:
        yield seed_message(device, "energy", "EnergyMeter", t, {"EnergyIn": value}, name, "grid_meter")
