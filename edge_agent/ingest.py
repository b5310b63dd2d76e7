"""MQTT → spool → database, without losing a message.

- The MQTT client (paho 2.x) uses a fixed client id, a persistent session, QoS 1 and manual acks.
- `on_message` only queues the message. The spooler thread gathers messages for a few milliseconds
  (group commit), turns them into points (or dead-letter entries), appends them to the spool with one fsync,
  and only then acknowledges them to the broker. While the spool is full it stops acknowledging, so the broker
  stops sending (its in-flight window is the back-pressure).
- The drainer thread writes spooled points to the database in batches bounded by size and time, retries with
  backoff while the database is down, and isolates points the database rejects as bad data (dead-lettered).
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge_agent.config import AgentConfig
from edge_agent.deadletter import DeadLetter
from edge_agent.health import Health
from edge_agent.mqtt_socket import BufferedClient
from edge_agent.payloads import Reject
from edge_agent.rules import Router, compile_rules
from edge_agent.spool import Spool, SpoolFull
from edge_agent.storage import Storage, StorageError
from shared.points import Point, line_head

log = logging.getLogger(__name__)


def make_client(config: AgentConfig, client_id: str, manual_ack: bool) -> mqtt.Client:
    """A paho client for the configured broker (persistent session when `manual_ack`)."""
    c = config.mqtt
    client = BufferedClient(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=False, protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    if c.username:
        client.username_pw_set(c.username, c.password)
    if c.tls:
        client.tls_set(ca_certs=c.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=max(1, int(c.reconnect_min_s)), max_delay=max(1, int(c.reconnect_max_s)))
    client.max_queued_messages_set(0)
    client.read_coalesce_s = c.read_coalesce_s if manual_ack else 0.0
    return client


class Ingest:
    """The ingest pipeline; `start()` connects and starts its threads, `stop()` drains and disconnects."""

    def __init__(self, config: AgentConfig, storage: Storage, health: Health,
                 on_stored: Callable[[list[bytes]], None] | None = None):
        self.config = config
        self.storage = storage
        self.health = health
        self.on_stored = on_stored
        self.router = Router(compile_rules(config.rules))
        self.spool = Spool(config.resolve(config.spool.dir), config.spool.max_bytes, config.spool.segment_bytes)
        self.deadletter = DeadLetter(config.resolve(config.ingest.deadletter), config.ingest.deadletter_max_bytes)
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warned_full = 0.0
        self.connected = threading.Event()
        self.client = make_client(config, config.mqtt.client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        health.set("spool_bytes", self.spool.pending_bytes)
        health.set("spool_points", self.spool.pending_points)

    # -- MQTT callbacks (network thread: never block here) ------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        subs = self.config.mqtt.subscribe or self.router.subscriptions
        client.subscribe([(s, self.config.mqtt.qos) for s in subs])
        self.connected.set()
        log.info("MQTT connected to %s:%d (session present: %s), subscribed to %s",
                 self.config.mqtt.host, self.config.mqtt.port, flags.session_present, ", ".join(subs))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.connected.clear()
        if not self._stop.is_set():
            self.health.incr("mqtt_disconnects")
            log.warning("MQTT disconnected (%s); reconnecting with backoff", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage):
        self._queue.put(msg)

    # -- spooler ------------------------------------------------------------------------------------------
    def _gather(self) -> list[mqtt.MQTTMessage]:
        """The next group of messages to commit with one fsync.

        Busy: whatever arrived while the previous group was being fsynced (groups form by themselves).
        Idle: after the first message, wait `commit_interval_s` for company, so that a trickle of messages
        does not cost one fsync each (acks are delayed by at most that long).
        """
        try:
            batch = [self._queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        if self._queue.empty() and self.config.spool.commit_interval_s > 0:
            time.sleep(self.config.spool.commit_interval_s)
        while len(batch) < 2000:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def handle(self, messages: list[mqtt.MQTTMessage]) -> tuple[list[Point], list[dict]]:
        """Points and dead-letter entries for a batch of messages (pure: no I/O)."""
        points: list[Point] = []
        rejects: list[dict] = []
        now_ns = time.time_ns()
        limit = self.config.ingest.max_payload_bytes
        for msg in messages:
            payload = msg.payload
            try:
                if len(payload) > limit:
                    raise Reject("too_large", f"payload has {len(payload)} bytes, limit {limit}")
                _rule, pts = self.router.route(msg.topic, payload, now_ns)
                points.extend(pts)
            except Reject as rej:
                self.health.incr(f"rejected_{rej.reason}")
                self.health.incr("rejected")
                rejects.append(DeadLetter.entry(msg.topic, payload, rej.reason, rej.detail, rej.rule))
                log.debug("rejected message on %s: %s", msg.topic, rej)
        return points, rejects

    def _spool_loop(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            messages = self._gather()
            if not messages:
                continue
            points, rejects = self.handle(messages)
            while True:
                try:
                    self.deadletter.write(rejects)
                    self.spool.append(points)
                    break
                except SpoolFull as exc:
                    rejects = []  # already written
                    now = time.monotonic()
                    if now - self._warned_full > 30:
                        log.error("spool full (%s): holding %d messages unacknowledged until the database "
                                  "catches up", exc, len(messages))
                        self._warned_full = now
                    self.health.incr("spool_full_waits")
                    if self._stop.wait(0.5):
                        return  # not acknowledged: the broker redelivers after restart
            self._ack(messages)
            self.health.incr("received", len(messages))
            self.health.incr("spooled", len(points))
            self._update_spool_gauges()

    def _ack(self, messages: list[mqtt.MQTTMessage]) -> None:
        """Acknowledge in arrival order; runs of QoS 1 messages go out as one write."""
        run: list[int] = []
        for msg in messages:
            if msg.qos == 1:
                run.append(msg.mid)
            elif msg.qos == 2:
                self.client.ack_many(run)
                run = []
                self.client.ack(msg.mid, msg.qos)
        self.client.ack_many(run)

    def _update_spool_gauges(self) -> None:
        pending = self.spool.pending_bytes
        self.health.set("spool_bytes", pending)
        self.health.set("spool_points", self.spool.pending_points)
        warn_at = self.config.spool.warn_ratio * self.config.spool.max_bytes
        now = time.monotonic()
        if pending >= warn_at and now - self._warned_full > 30:
            log.warning("spool at %.0f%% of its bound (%d of %d bytes): is the database down?",
                        100 * pending / self.config.spool.max_bytes, pending, self.config.spool.max_bytes)
            self._warned_full = now

    # -- drainer ------------------------------------------------------------------------------------------
    def _write_isolating_bad(self, lines: list[bytes]) -> None:
        """Write lines; on a permanent error split the batch and dead-letter the points the database rejects."""
        try:
            self.storage.write_lines(b"".join(lines))
            return
        except StorageError as exc:
            if exc.retryable:
                raise
            if len(lines) == 1:
                measurement = line_head(lines[0])[0]
                self.deadletter.write([DeadLetter.entry(measurement, lines[0].rstrip(b"\n"), "storage_rejected",
                                                        str(exc), None)])
                self.health.incr("rejected_storage_rejected")
                self.health.incr("rejected")
                log.warning("database rejected a point (dead-lettered): %s", exc)
                return
        mid = len(lines) // 2
        self._write_isolating_bad(lines[:mid])
        self._write_isolating_bad(lines[mid:])

    def _drain_loop(self) -> None:
        cfg = self.config.spool
        backoff = 0.5
        while True:
            has_data = self.spool.wait_for_data(cfg.batch_interval_s)
            if self._stop.is_set() and (not has_data or self._drain_deadline_passed()):
                return
            if not has_data:
                continue
            if self.spool.pending_points < cfg.batch_points and not self._stop.is_set():
                self._stop.wait(cfg.batch_interval_s)  # let a batch fill up, bounded by time
            records, pos = self.spool.peek(cfg.batch_points)
            body = b"".join(records)
            try:
                try:
                    self.storage.write_lines(body)
                except StorageError as exc:
                    if exc.retryable:
                        raise
                    self._write_isolating_bad(body.splitlines(keepends=True))
            except StorageError as exc:
                self.health.incr("retries")
                log.warning("database write failed (%s); %d points stay spooled, retry in %.1f s",
                            exc, self.spool.pending_points, backoff)
                if self._stop.wait(backoff) and self._drain_deadline_passed():
                    return
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            n = body.count(b"\n")
            self.spool.commit(pos, n)
            self.health.incr("stored", n)
            self._update_spool_gauges()
            if self.on_stored:
                try:
                    self.on_stored(body.splitlines())
                except Exception:
                    log.exception("on_stored hook failed")

    def _drain_deadline_passed(self) -> bool:
        return time.monotonic() > self._stop_deadline

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop_deadline = float("inf")
        self._threads = [threading.Thread(target=self._spool_loop, name="spooler", daemon=True),
                         threading.Thread(target=self._drain_loop, name="drainer", daemon=True)]
        for t in self._threads:
            t.start()
        c = self.config.mqtt
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Disconnect, spool what was received, and drain to the database for at most `drain_timeout` s."""
        self._stop_deadline = time.monotonic() + drain_timeout
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        for t in self._threads:
            t.join(drain_timeout + 5)
        self.spool.close()
        self.deadletter.close()
