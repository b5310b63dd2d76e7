"""The agent process: ingest plus the components (flow, forecast, model API), one slot timer, health, watchdog.

The components are listed here, in the order they are built; each is a `ComponentSpec` (edge_agent/component.py)
whose config section decides whether it runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from edge_agent import flow, forecast
from edge_agent.component import AgentContext, Component, ComponentSpec, utc_now
from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.models.api import SPEC as API
from edge_agent.publish import hass
from edge_agent.publish.mqtt import Publisher
from edge_agent.runtime.durable import make_dirs
from edge_agent.runtime.health import DiskWrites, Health
from edge_agent.runtime.supervise import Watchdog, Worker, notify, watchdog_interval_s
from edge_agent.runtime.timer import SlotTimer
from shared.storage import open_storage

log = logging.getLogger(__name__)

COMPONENTS: tuple[ComponentSpec, ...] = (flow.SPEC, forecast.SPEC, API)


class Agent:
    def __init__(self, config: AgentConfig, clock: Callable[[], datetime] = utc_now,
                 components: tuple[str, ...] | None = None):
        """`components`: the names to run (default: every one whose config section is present)."""
        self.config = config
        make_dirs(config.state_dir, 0o700)  # spool, dead letters, models, log
        self.health = Health()
        self.storage = open_storage(config.storage)
        self.publisher = Publisher(config)
        self._stop = threading.Event()
        self.timer = SlotTimer(clock, on_error=lambda name, exc: self.health.incr(f"{name}_errors"))
        self.ctx = AgentContext(config=config, health=self.health, publish=self.publisher.publish,
                                open_storage=lambda: open_storage(config.storage), timer=self.timer, clock=clock)
        self.ingest = Ingest(config, self.storage, self.health, on_stored=self._stored)
        self.ctx.flush_ingest = self.ingest.flush
        self.components: dict[str, Component] = self.ctx.components
        for spec in COMPONENTS:
            if components is not None and spec.name not in components:
                continue
            section = spec.parse(config)
            if section is not None:
                self.components[spec.name] = spec.build(section, self.ctx)
        self._timer_worker = Worker("timer", lambda: self.timer.loop(self._stop, self._timer_worker.beat), self._stop,
                                    lambda name, exc: self.health.incr("thread_restarts"), self._fatal)
        self._health_thread: threading.Thread | None = None
        self._health_logged = float("-inf")
        self.disk = DiskWrites(min_span_s=min(60.0, 4 * config.health.interval_s))
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
        """The counters as an `agent` point (written with the next ingest group: no write of its own) and, every
        `health.log_interval_s`, in the log."""
        self.disk.sample(self.health)
        snap = self.health.snapshot()
        now = time.monotonic()
        if now - self._health_logged >= self.config.health.log_interval_s:
            self._health_logged = now
            log.info("health: %s", ", ".join(f"{k}={v}" for k, v in sorted(snap.items())))
        self.ingest.submit([self.health.point(self.config.health.host_tag)])
        try:
            doc = {"time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), **snap}
            self.publisher.publish(hass.health_topic(self.config.publish.topic_prefix), json.dumps(doc), qos=1,
                                   retain=True)
        except Exception as exc:  # the broker away must not cost the health point
            log.debug("could not publish the health values: %s", exc)

    def start(self) -> None:
        log.info("edge agent starting: state in %s, storage %r, components: %s", self.config.state_dir,
                 self.config.storage, ", ".join(self.components) or "ingest only")
        self.publisher.start()
        pub = self.config.publish
        if pub.discovery:
            for topic, payload in hass.health_discovery(pub.node_id, pub.topic_prefix, pub.discovery_prefix,
                                                        self.config.health.interval_s):
                self.publisher.publish(topic, payload, qos=1, retain=True)
        self.ingest.start()
        for name, component in self.components.items():
            component.start()
            log.info("component %s started", name)
        if self.timer.jobs:
            self._timer_worker.start()
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
        self.timer.wake()
        if self._timer_worker.thread.is_alive():
            self._timer_worker.join(30)  # a job in progress finishes before its component closes
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

