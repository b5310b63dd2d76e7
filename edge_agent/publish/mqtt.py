"""The agent's own MQTT connection for what it publishes (forecasts, the flow, discovery, its availability)."""

from __future__ import annotations

import contextlib

from edge_agent.config import AgentConfig
from edge_agent.publish import hass
from edge_agent.runtime.health import Health
from edge_agent.runtime.mqtt_client import make_client


class Publisher:
    """The agent's own MQTT connection for outgoing messages (forecasts, the flow, discovery), separate from
    ingest. Its last will marks the agent `offline` on `<topic_prefix>/status` (retained) when the connection
    drops; it says `online` on every connect and `offline` when it stops, so Home Assistant shows the agent's
    sensors unavailable instead of an old retained forecast as current."""

    def __init__(self, config: AgentConfig, health: Health | None = None):
        self.client = make_client(config, f"{config.mqtt.client_id}-pub", manual_ack=False,
                                  on_thread_failure=health and (lambda exc: health.thread_failed("mqtt_publish")))
        self._config = config
        self.availability_topic = config.publish.availability_topic
        self.client.will_set(self.availability_topic, hass.OFFLINE, qos=1, retain=True)
        self.client.on_connect = self._on_connect

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if not reason_code.is_failure:
            client.publish(self.availability_topic, hass.ONLINE, qos=1, retain=True)

    def start(self) -> None:
        c = self._config.mqtt
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        info = self.client.publish(self.availability_topic, hass.OFFLINE, qos=1, retain=True)
        with contextlib.suppress(Exception):
            info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
