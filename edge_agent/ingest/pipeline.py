"""MQTT → spool → database, without losing a message.

- The MQTT client (paho 2.x) uses a fixed client id, a persistent session, QoS 1 and manual acks.
- `on_message` only queues the message. The spooler thread gathers messages for a few milliseconds
  (group commit), turns them into points (or dead-letter entries), appends them to the spool with one fsync,
  and only then acknowledges them to the broker. While the spool is full it stops acknowledging, so the broker
  stops sending (its in-flight window is the back-pressure).
- The drainer thread writes spooled points to the database in batches bounded by size and time, retries with
  backoff while the database is down, and isolates points the database rejects as bad data (dead-lettered).
- Every message is handled in isolation: whatever goes wrong while turning one message into line protocol
  dead-letters that message (a reason from the parser, or `internal_error: <exception type>`), never the thread.
  Both threads are supervised (edge_agent/supervise.py): restarted with backoff if they die anyway.
- A disk that refuses the spool or the dead-letter file (full, I/O error) is treated like a full spool: the
  messages stay unacknowledged and the write is retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge_agent.config import AgentConfig
from edge_agent.ingest.convert import Converter, count_rejects
from edge_agent.ingest.deadletter import DeadLetter
from edge_agent.ingest.drain import write_body
from edge_agent.ingest.mqtt import make_client
from edge_agent.ingest.notes import Notes
from edge_agent.ingest.queue import MessageQueue
from edge_agent.ingest.rules import Router, compile_rules
from edge_agent.ingest.series import SeriesLimit
from edge_agent.ingest.spool import Spool, SpoolFull
from edge_agent.runtime.health import Health
from edge_agent.runtime.supervise import Worker
from shared.points import line_head, split_lines
from shared.schema import AGENT
from shared.storage import Storage, StorageError

log = logging.getLogger(__name__)
OWN_POINT = b"\n" + AGENT.encode() + b","  # a line of the agent's own health point (Agent.report_health)


class Ingest:
    """The ingest pipeline; `start()` connects and starts its threads, `stop()` drains and disconnects."""

    def __init__(self, config: AgentConfig, storage: Storage, health: Health,
                 on_stored: Callable[[list[bytes]], None] | None = None):
        self.config = config
        self.storage = storage
        self.health = health
        self.on_stored = on_stored
        self.router = Router(compile_rules(config.rules))
        self.series = SeriesLimit(config.ingest.max_series_per_rule, config.state_dir / "series.json")
        self.converter = Converter(self.router, config.ingest.max_payload_bytes, self.series)
        self.notes = Notes(health)
        self.spool = Spool(config.resolve(config.spool.dir), config.spool.max_bytes, config.spool.segment_bytes)
        self.deadletter = DeadLetter(config.resolve(config.ingest.deadletter), config.ingest.deadletter_max_bytes,
                                     config.ingest.deadletter_keep,
                                     on_deleted=lambda n: health.incr("deadletter_rotated_away", n))
        self._queue = MessageQueue(config.ingest.queue_max_messages, config.ingest.queue_max_bytes)
        self._stop = threading.Event()
        self.on_fatal: Callable[[str], None] | None = None
        self.spooler = Worker("spooler", self._spool_loop, self._stop, health.thread_failed, self._fatal)
        self.drainer = Worker("drainer", self._drain_loop, self._stop, health.thread_failed, self._fatal)
        self._warned_full = 0.0
        self._warned_drop = 0.0
        self.connected = threading.Event()
        self.client = make_client(config, config.mqtt.client_id, manual_ack=True,
                                  on_thread_failure=lambda exc: health.thread_failed("mqtt_ingest", exc))
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
        if self._queue.put(msg, block=msg.qos > 0):
            return
        if msg.qos == 0:
            self.health.incr("dropped_qos0")
            now = time.monotonic()
            if now - self._warned_drop > 30:
                log.warning("ingest queue full (%d messages): dropping QoS 0 messages (counter dropped_qos0); "
                            "use QoS 1 for data that must not be lost", len(self._queue))
                self._warned_drop = now

    @property
    def queued_messages(self) -> int:
        return len(self._queue)

    @property
    def threads(self) -> list[threading.Thread]:
        return [self.spooler.thread, self.drainer.thread]

    def _fatal(self, name: str) -> None:
        if self.on_fatal:
            self.on_fatal(name)

    # -- spooler ------------------------------------------------------------------------------------------
    def _gather(self) -> list[mqtt.MQTTMessage]:
        """The next group of messages to commit with one fsync.

        Busy: whatever arrived while the previous group was being fsynced (groups form by themselves).
        Idle: after the first message, wait `commit_interval_s` for company, so that a trickle of messages
        does not cost one fsync each (acks are delayed by at most that long).
        """
        return self._queue.get_batch(0.5, self.config.spool.commit_interval_s, 2000)

    def _spool_loop(self) -> None:
        while not self._stop.is_set() or len(self._queue):
            self.spooler.beat()
            groups = [self._gather()]
            while groups:
                group = groups.pop(0)
                if not group:
                    continue
                outcome = self._commit_group(group)
                if outcome == "stopped":
                    return  # not acknowledged: the broker redelivers after restart
                if outcome == "split":  # the disk has no room for this group's record: try halves
                    half = len(group) // 2
                    groups[:0] = [group[:half], group[half:]]

    def _commit_group(self, messages: list[mqtt.MQTTMessage]) -> str:
        """Convert, spool (write + fsync), dead-letter the rejects, then acknowledge.

        Returns "done", "split" (the disk refused a record of more than one message) or "stopped" (the agent
        stopped while the disk refused)."""
        converted = self.converter.convert(messages)
        while True:
            try:
                self.spool.append_lines(converted.body, converted.points)
                break
            except SpoolFull as exc:
                self._hold(messages, f"spool full ({exc})", "spool_full_waits")
            except OSError as exc:
                self._hold(messages, f"cannot write to disk ({exc})", "spool_write_errors")
                if len(messages) > 1:
                    return "split"
            if self.spooler.wait(self._stop, 0.5):
                return "stopped"
        while converted.rejects:
            try:
                self.deadletter.write(converted.rejects)
                break
            except OSError as exc:
                self._hold(messages, f"cannot write the dead-letter file ({exc})", "spool_write_errors")
            if self.spooler.wait(self._stop, 0.5):
                return "stopped"
        count_rejects(self.health, converted.rejects)
        self.notes.record(converted.ignored, converted.skipped)
        self._ack(messages)
        self.health.incr("received", len(messages))
        self.health.incr("spooled", converted.points)
        self._update_spool_gauges()
        self.series.save()
        self.health.set("series", self.series.count)
        return "done"

    def _hold(self, messages: list, why: str, counter: str) -> None:
        now = time.monotonic()
        if now - self._warned_full > 30:
            log.error("%s: holding %d messages unacknowledged until it clears", why, len(messages))
            self._warned_full = now
        self.health.incr(counter)

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
    def _storage_rejected(self, refused: list[tuple[bytes, str]]) -> None:
        """Dead-letter the lines the database refused (or that could not be sent safely)."""
        if not refused:
            return
        entries = []
        for line, error in refused:
            head = line_head(line)
            entries.append(DeadLetter.entry(head[0] if head else "", line.rstrip(b"\n"), "storage_rejected",
                                            error[:500], None))
            log.warning("database refused a point (dead-lettered): %s", error[:200])
        self.deadletter.write(entries)
        count_rejects(self.health, entries)

    def _drain_loop(self) -> None:
        cfg = self.config.spool
        backoff = 0.5
        while True:
            self.drainer.beat()
            has_data = self.spool.wait_for_data(cfg.batch_interval_s)
            if self._stop.is_set() and (not has_data or self._drain_deadline_passed()):
                return
            if not has_data:
                continue
            if not self._stop.is_set():  # let a batch fill up, bounded by time and by a pause of the stream
                self.spool.wait_for_batch(cfg.batch_points, cfg.batch_interval_s, cfg.drain_quiet_s)
            records, pos = self.spool.peek(cfg.batch_points)
            body = b"".join(records)
            try:
                refused = write_body(self.storage, body)
            except StorageError as exc:
                self.health.incr("retries")
                log.warning("database write failed (%s); %d points stay spooled, retry in %.1f s",
                            exc, self.spool.pending_points, backoff)
                if self._stop.is_set():  # stopping: keep trying until the drain deadline, without spinning
                    time.sleep(min(backoff, 0.5))
                    if self._drain_deadline_passed():
                        return
                elif self.drainer.wait(self._stop, backoff) and self._drain_deadline_passed():
                    return
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            self._storage_rejected(refused)
            # announce before committing: once nothing is pending, every stored point has been announced (the
            # flow must not compute a slot between the commit and the hook, from readings it was not told of)
            if self.on_stored:
                try:
                    self.on_stored(split_lines(body))
                except Exception:
                    log.exception("on_stored hook failed")
            n = body.count(b"\n")
            self.spool.commit(pos, n)
            # the agent's own health points (measurement `agent`) are counted apart: `stored` is device points
            own = body.count(OWN_POINT) + body.startswith(OWN_POINT[1:])
            own -= sum(1 for line, _ in refused if line.startswith(OWN_POINT[1:]))
            self.health.incr("stored", n - len(refused) - own)
            self.health.incr("stored_own", own)
            self._update_spool_gauges()

    def _drain_deadline_passed(self) -> bool:
        return time.monotonic() > self._stop_deadline

    # -- lifecycle ----------------------------------------------------------------------------------------
    def stalled(self, max_age_s: float) -> str | None:
        """Why ingest is not healthy (a worker that has not beaten for max_age_s, or has given up); None if it is."""
        for w in (self.spooler, self.drainer):
            if w.fatal or not w.is_alive():
                return f"worker thread {w.name} is not running"
            if w.age() > max_age_s:
                return f"worker thread {w.name} made no progress for {w.age():.0f} s"
        net = getattr(self.client, "_thread", None)
        if net is not None and not net.is_alive() and not self._stop.is_set():
            return "the MQTT network thread is not running"
        return None

    def start(self) -> None:
        self._stop_deadline = float("inf")
        self.spooler.start()
        self.drainer.start()
        c = self.config.mqtt
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Disconnect, spool what was received, and drain to the database for at most `drain_timeout` s."""
        self._stop_deadline = time.monotonic() + drain_timeout
        self._stop.set()
        self._queue.close()
        self.client.disconnect()
        self.client.loop_stop()
        for w in (self.spooler, self.drainer):
            w.join(drain_timeout + 5)
        self.spool.close()
        self.deadletter.close()
        self.series.save(force=True)
