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
from pathlib import Path

from edge_agent import flow, forecast, retention, tariff
from edge_agent.api import SPEC as API
from edge_agent.backup import expected as backup_expected
from edge_agent.backup import read_status as backup_status
from edge_agent.component import AgentContext, Component, ComponentSpec, utc_now
from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.publish import discovery, hass
from edge_agent.publish.hass import problem_components, problem_topic
from edge_agent.publish.mqtt import Publisher
from edge_agent.runtime import problems
from edge_agent.runtime.durable import make_dirs
from edge_agent.runtime.health import DiskWrites, Health
from edge_agent.runtime.supervise import Watchdog, Worker, notify, watchdog_interval_s
from edge_agent.runtime.timer import SlotTimer
from shared.storage import open_storage

log = logging.getLogger(__name__)

# retention first (it routes what lasts before anything writes it); tariff before the flow and the forecast,
# which price their slots with it
COMPONENTS: tuple[ComponentSpec, ...] = (retention.SPEC, tariff.SPEC, flow.SPEC, forecast.SPEC, API)


class Agent:
    def __init__(self, config: AgentConfig, clock: Callable[[], datetime] = utc_now,
                 components: tuple[str, ...] | None = None):
        """`components`: the names to run (default: every one whose config section is present)."""
        self.config = config
        make_dirs(config.state_dir, 0o700)  # spool, dead letters, models, log
        self.health = Health()
        self.storage = open_storage(config.storage)
        self.publisher = Publisher(config, self.health)
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
                                    self.health.thread_failed, self._fatal)
        self._health_worker = Worker("health", self._health_loop, self._stop, self.health.thread_failed, self._fatal)
        self._health_logged = float("-inf")
        self.disk = DiskWrites(min_span_s=min(60.0, 4 * config.health.interval_s))
        self.exit_code = 0
        self.ingest.on_fatal = self._fatal
        self.watchdog: Watchdog | None = None
        self.problems = self._problems()
        self._problem_published: tuple[list[str], float] | None = None
        self.ctx.status_parts["problems"] = lambda: list(self.problems.current)
        self.ctx.status_parts["backup"] = lambda: backup_status(config.state_dir) or None
        retention_part = self.components.get("retention")
        if retention_part is not None:
            self.ctx.status_parts["retention"] = retention_part.status

    def _problems(self) -> problems.Problems:
        """The checks behind the `problem` sensor, the status's `problems` and the server's overview."""
        ac = problems.parse_config(self.config)
        forecaster = self.components.get("forecast")

        def guard() -> dict | None:
            return forecaster.guard.status() if forecaster is not None else None

        paths = [self.config.state_dir, *(Path(p) for p in ac.disk_paths)]
        retention_part = self.components.get("retention")
        return problems.Problems(ac, problems.Inputs(
            stalled=lambda: self.problem(), received=lambda: self.health.get("received"),
            spool_bytes=lambda: self.ingest.spool.pending_bytes, spool_max=self.config.spool.max_bytes,
            spool_warn_ratio=self.config.spool.warn_ratio, db_up=self.storage.ping,
            backup=lambda: backup_status(self.config.state_dir), backup_expected=backup_expected(self.config),
            guard=guard, health_value=lambda name: self.health.snapshot().get(name), paths=paths,
            raw_budget=retention_part.budget_problem if retention_part is not None else lambda: None))

    def check_problems(self) -> list[dict]:
        """Judge, count and publish (retained, on a change and every `publish_every_s`) the problems."""
        found = self.problems.check()
        self.health.set("problems", len(found))
        codes = [p["code"] for p in found]
        last = self._problem_published
        if last is None or last[0] != codes or time.monotonic() - last[1] >= self.problems.ac.publish_every_s:
            # the backup's time rides along (Home Assistant's last_backup sensor)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                self.publisher.publish(problem_topic(self.config.publish.topic_prefix),
                                       json.dumps(problems.payload(found, now, backup_status(self.config.state_dir).get("last_ok"))),
                                       qos=1, retain=True)
                self._problem_published = (codes, time.monotonic())
            except Exception as exc:
                log.warning("could not publish the problem state: %s", exc)
        if found and (last is None or last[0] != codes):
            log.warning("problems: %s", "; ".join(p["message"] for p in found))
        return found

    def _fatal(self, worker: str) -> None:
        """A worker gave up: stop, and exit non-zero so that the service manager restarts the process."""
        self.exit_code = 70  # EX_SOFTWARE
        self._stop.set()

    def problem(self) -> str | None:
        """Why the agent should not tell the watchdog it is healthy (None: it is)."""
        if self.exit_code:
            return "a worker thread gave up"
        max_age = max(2 * self.watchdog.interval_s, 5.0) if self.watchdog else 30.0
        stalled = self.ingest.stalled(max_age)
        if stalled or self._stop.is_set():
            return stalled
        workers = [self._health_worker] + ([self._timer_worker] if self.timer.jobs else [])
        for w in workers:
            if w.fatal or not w.is_alive():
                return f"worker thread {w.name} is not running"
        net = getattr(self.publisher.client, "_thread", None)
        if net is None or not net.is_alive():
            return "the MQTT network thread of the publisher is not running"
        return None

    def _stored(self, lines: list[bytes]) -> None:
        for listener in self.ctx.stored_listeners:
            try:
                listener(lines)
            except Exception:
                log.exception("stored-points listener failed")
                self.health.incr("listener_errors")

    def _health_loop(self) -> None:
        interval = self.config.health.interval_s
        while not self._health_worker.wait(self._stop, interval):
            try:
                self.check_problems()
            except Exception:
                log.exception("problem checks failed")
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
        self.ingest.start()
        for name, component in self.components.items():
            component.start()
            log.info("component %s started", name)
        self.announce()
        if self.timer.jobs:
            self._timer_worker.start()
        self._health_worker.start()
        interval = watchdog_interval_s()
        if interval:
            self.watchdog = Watchdog(interval / 2, self.problem, self._stop)
            self.watchdog.start()
            log.info("systemd watchdog: beating every %.1f s while ingest makes progress", interval / 2)
        notify("READY=1")

    def announce(self) -> None:
        """Home Assistant discovery: one device config with every component's entities (publish/discovery.py)."""
        if not self.config.publish.discovery:
            return
        try:
            pub = self.config.publish
            own = problem_components(pub.node_id, pub.topic_prefix) | hass.health_components(
                pub.node_id, pub.topic_prefix, self.config.health.interval_s)
            entities = discovery.collect(self.components.values(), extra=own)
            discovery.announce(self.config.publish, entities, self.publisher.publish, self.config.state_dir)
        except Exception:  # discovery must never stop the agent
            log.exception("Home Assistant discovery failed")
            self.health.incr("publish_errors")

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

