"""The agent process: ingest plus optional components (flow, forecast, model API), health reporting.

A component module exposes `build(config, ctx) -> Component | None`; a Component has `start()` and `stop()`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from edge_agent import hass
from edge_agent.config import AgentConfig
from edge_agent.health import Health
from edge_agent.ingest import Ingest, make_client
from edge_agent.supervise import Watchdog, notify, watchdog_interval_s
from shared.storage import Storage, open_storage

log = logging.getLogger(__name__)

COMPONENT_MODULES = ("edge_agent.flow", "edge_agent.forecast", "edge_agent.models.api")


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AgentContext:
    """What the agent gives its components."""

    config: AgentConfig
    health: Health
    publish: Callable[..., None]
    state_dir: Path
    clock: Callable[[], datetime] = utc_now
    storage_factory: Callable[[], Storage] | None = None
    stored_listeners: list[Callable[[list[bytes]], None]] = field(default_factory=list)
    components: dict[str, object] = field(default_factory=dict)

    @property
    def storage(self) -> Storage:
        """A Storage of the component's own (a fresh connection each time this is read)."""
        assert self.storage_factory is not None
        return self.storage_factory()

    @property
    def topic_prefix(self) -> str:
        return self.config.publish.topic_prefix

    def on_stored(self, listener: Callable[[list[bytes]], None]) -> None:
        """Call `listener(lines)` with the line-protocol lines of each batch that reached the database
        (e.g. flow recomputes slots that got late data; `shared.points.line_head` parses a line's head)."""
        self.stored_listeners.append(listener)


class Publisher:
    """The agent's own MQTT connection for outgoing messages (forecasts, the flow, discovery), separate from
    ingest. Its last will marks the agent `offline` on `<topic_prefix>/status` (retained) when the connection
    drops; it says `online` on every connect and `offline` when it stops, so Home Assistant shows the agent's
    sensors unavailable instead of an old retained forecast as current."""

    def __init__(self, config: AgentConfig):
        self.client = make_client(config, f"{config.mqtt.client_id}-pub", manual_ack=False)
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


class Agent:
    def __init__(self, config: AgentConfig, clock: Callable[[], datetime] = utc_now,
                 components: tuple[str, ...] = COMPONENT_MODULES):
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # spool, dead letters, models, log
        self.health = Health()
        self.storage = open_storage(config.storage)
        self.publisher = Publisher(config)
        self.ctx = AgentContext(config=config, health=self.health, publish=self.publisher.publish,
                                state_dir=config.state_dir, clock=clock,
                                storage_factory=lambda: open_storage(config.storage))
        self.ingest = Ingest(config, self.storage, self.health, on_stored=self._stored)
        self.components: dict[str, Component] = {}
        for name in components:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name and name.startswith(exc.name):
                    log.debug("component %s not installed", name)
                    continue
                raise
            component = module.build(config, self.ctx)
            if component is not None:
                self.components[name] = component
                self.ctx.components[name] = component
        self._stop = threading.Event()
        self._health_thread: threading.Thread | None = None
        self.exit_code = 0
        self.ingest.on_fatal = self._fatal
        self.watchdog: Watchdog | None = None

    def _fatal(self, worker: str) -> None:
        """A worker gave up: stop, and exit non-zero so that the service manager restarts the process."""
        self.exit_code = 70  # EX_SOFTWARE
        self._stop.set()

    def problem(self) -> str | None:
        """Why the agent should not tell the watchdog it is healthy (None: it is)."""
        if self.exit_code:
            return "a worker thread gave up"
        max_age = max(2 * self.watchdog.interval_s, 5.0) if self.watchdog else 30.0
        return self.ingest.stalled(max_age)

    def _stored(self, lines: list[bytes]) -> None:
        for listener in self.ctx.stored_listeners:
            try:
                listener(lines)
            except Exception:
                log.exception("stored-points listener failed")
                self.health.incr("listener_errors")

    def _health_loop(self) -> None:
        interval = self.config.health.interval_s
        while not self._stop.wait(interval):
            self.report_health()

    def report_health(self) -> None:
        snap = self.health.snapshot()
        log.info("health: %s", ", ".join(f"{k}={v}" for k, v in sorted(snap.items())))
        try:
            self.ingest.spool.append([self.health.point(self.config.health.host_tag)])
        except Exception as exc:  # a full spool must not stop the agent
            log.warning("could not spool health point: %s", exc)

    def start(self) -> None:
        log.info("edge agent starting: state in %s, storage %r, components: %s", self.config.state_dir,
                 self.config.storage, ", ".join(self.components) or "ingest only")
        self.publisher.start()
        self.ingest.start()
        for name, component in self.components.items():
            component.start()
            log.info("component %s started", name)
        self._health_thread = threading.Thread(target=self._health_loop, name="health", daemon=True)
        self._health_thread.start()
        interval = watchdog_interval_s()
        if interval:
            self.watchdog = Watchdog(interval / 2, self.problem, self._stop)
            self.watchdog.start()
            log.info("systemd watchdog: beating every %.1f s while ingest makes progress", interval / 2)
        notify("READY=1")

    def stop(self) -> None:
        self._stop.set()
        notify("STOPPING=1")
        for name, component in reversed(list(self.components.items())):
            try:
                component.stop()
            except Exception:
                log.exception("stopping %s failed", name)
        self.ingest.stop()
        self.publisher.stop()
        self.storage.close()
        log.info("edge agent stopped")

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT (exit code 0) or until a worker gives up (non-zero, after a bounded stop)."""
        import os
        import signal

        def _handler(signum, frame):
            self._stop.set()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)
        self.start()
        while not self._stop.wait(1.0):
            pass
        if self.exit_code:
            # a stuck thread must not keep a broken agent alive: exit even if stopping hangs
            timer = threading.Timer(30.0, lambda: os._exit(self.exit_code))
            timer.daemon = True
            timer.start()
        self.stop()
        return self.exit_code

