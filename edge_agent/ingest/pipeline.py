"""MQTT → database (or spool) → acknowledgement, without losing a message, in groups that spare the SD card.

- The MQTT client (paho 2.x) uses a fixed client id, a persistent session, QoS 1 and manual acks.
- `on_message` only queues the message. The spooler thread gathers a group — until `spool.commit_interval_s`
  after its first message or `spool.commit_max_messages` messages, whichever comes first (the rest waits in the
  broker's memory, unacknowledged) — turns it into points (or dead-letter entries), and commits it with one write:
  straight to the database while the database answers and the spool is empty (InfluxDB's WAL is fsynced before it
  answers: durable, so the agent writes nothing of its own), else appended to the on-disk spool with one
  fdatasync. Only then are the messages acknowledged. While the spool is full it stops acknowledging, so the
  broker stops sending (its in-flight window is the back-pressure). `flush()` commits the current group now
  (the flow and the forecast call it before they read the database). The agent's own health points join the
  next group (no write of their own).
- The drainer thread writes spooled points to the database in batches bounded by size and time, retries with
  backoff while the database is down, and isolates points the database rejects as bad data (dead-lettered). Once
  the spool is empty again, groups go straight to the database.
- Every message is handled in isolation: whatever goes wrong while turning one message into line protocol
  dead-letters that message (a reason from the parser, or `internal_error: <exception type>`), never the thread.
  Both threads are supervised (edge_agent/runtime/supervise.py): restarted with backoff if they die anyway.
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
from edge_agent.ingest.notes import Notes
from edge_agent.ingest.queue import MessageQueue
from edge_agent.ingest.rules import Router, load_rules
from edge_agent.ingest.series import SeriesLimit
from edge_agent.ingest.spool import Spool, SpoolFull
from edge_agent.runtime.health import Health
from edge_agent.runtime.mqtt_client import make_client
from edge_agent.runtime.supervise import Worker
from shared.points import Point, line_head, split_lines, to_lines
from shared.schema import AGENT
from shared.storage import Storage, StorageError, open_storage

log = logging.getLogger(__name__)
OWN_POINT = b"\n" + AGENT.encode() + b","  # a line of the agent's own health point (Agent.report_health)


class Ingest:
    """The ingest pipeline; `start()` connects and starts its threads, `stop()` drains and disconnects."""

    def __init__(self, config: AgentConfig, storage: Storage, health: Health,
                 on_stored: Callable[[list[bytes]], None] | None = None, direct: Storage | None = None):
        """`storage` is the drainer's; `direct` (default: a connection of its own) takes the groups written
        straight to the database."""
        self.config = config
        self.storage = storage
        self.direct = direct or open_storage(config.storage)
        self.health = health
        self.on_stored = on_stored
        self.router = Router(load_rules(config))
        self.series = SeriesLimit(config.ingest.max_series_per_rule, config.state_dir / "series.json")
        self.converter = Converter(self.router, config.ingest.max_payload_bytes, self.series)
        self.notes = Notes(health)
        self.spool = Spool(config.resolve(config.spool.dir), config.spool.max_bytes, config.spool.segment_bytes,
                           config.spool.cursor_interval_s)
        if self.spool.damaged_records:
            health.incr("spool_damaged_records", self.spool.damaged_records)
            health.incr("spool_quarantined_bytes", self.spool.quarantined_bytes)
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
        self._warned_direct = 0.0
        # the flush barrier: messages queued so far vs messages committed (both in arrival order)
        self._progress = threading.Condition()
        self._received_n = 0
        self._committed_n = 0
        self._own: list[bytes] = []  # the agent's own line protocol (health) waiting for the next group
        self._own_since = 0.0
        self._own_lock = threading.Lock()
        self.connected = threading.Event()
        self.client = make_client(config, config.mqtt.client_id, manual_ack=True,
                                  on_thread_failure=lambda exc: health.thread_failed("mqtt_ingest", exc))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        health.set("spool_bytes", self.spool.pending_bytes)
        health.set("spool_points", self.spool.pending_points)
        if self.deadletter.torn_bytes:
            health.incr("deadletter_torn_bytes", self.deadletter.torn_bytes)

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
            with self._progress:
                self._received_n += 1
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
        """The next group of messages to commit with one write.

        Busy: whatever is queued (groups form by themselves, bounded by the broker's in-flight window).
        A trickle: wait until the first message is `commit_interval_s` old or `commit_max_messages` have come, so
        that a house's few messages a second cost one database write (one WAL fsync) per group, not per message.
        """
        c = self.config.spool
        return self._queue.get_batch(0.5, c.commit_interval_s, 2000, c.commit_max_messages)

    def submit(self, points: list[Point]) -> None:
        """The agent's own points (health): written with the next group, no write of their own."""
        if not points:
            return
        with self._own_lock:
            if not self._own:
                self._own_since = time.monotonic()
            self._own.append(to_lines(points))

    def _take_own(self, with_group: bool) -> list[bytes]:
        with self._own_lock:
            due = self._own and (with_group or self._stop.is_set()
                                 or time.monotonic() - self._own_since >= self.config.spool.commit_interval_s)
            if not due:
                return []
            own, self._own = self._own, []
            return own

    def flush(self, timeout: float = 10.0) -> bool:
        """Commit every message received so far now, instead of at the end of its group's interval; True once
        they are in the database or the spool (False: not within `timeout`, e.g. a full disk holds them)."""
        with self._progress:
            target = self._received_n
            if self._committed_n >= target:
                return True
        self._queue.flush()
        with self._progress:
            return self._progress.wait_for(lambda: self._committed_n >= target, timeout)

    def _spool_loop(self) -> None:
        while not self._stop.is_set() or len(self._queue):
            self.spooler.beat()
            group = self._gather()
            own = self._take_own(bool(group))
            groups = [(group, b"".join(own))]
            while groups:
                messages, own_body = groups.pop(0)
                if not messages and not own_body:
                    continue
                outcome = self._commit_group(messages, own_body)
                if outcome == "stopped":
                    return  # not acknowledged: the broker redelivers after restart
                if outcome == "split":  # the disk has no room for this group's record: try halves
                    half = len(messages) // 2
                    groups[:0] = [(messages[:half], own_body), (messages[half:], b"")]
        own = self._take_own(True)
        if own:  # stopping: the last health point still goes (to the spool if the database is away)
            self._commit_group([], b"".join(own))

    def _commit_group(self, messages: list[mqtt.MQTTMessage], own_body: bytes = b"") -> str:
        """Convert, store (the database, else the spool), dead-letter the rejects, then acknowledge.

        Returns "done", "split" (the disk refused a record of more than one message) or "stopped" (the agent
        stopped while the disk refused)."""
        converted = self.converter.convert(messages)
        body = converted.body + own_body
        points = converted.points + (own_body.count(b"\n") if own_body else 0)
        while body and not self._store_direct(body):
            try:
                self.spool.append_lines(body, points)
                self.health.incr("spooled", points)
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
        with self._progress:
            self._committed_n += len(messages)
            self._progress.notify_all()
        self.health.incr("received", len(messages))
        self._update_spool_gauges()
        self.series.save()
        self.health.set("series", self.series.count)
        return "done"

    def _store_direct(self, body: bytes) -> bool:
        """Write a group straight to the database when nothing waits in the spool (else the group queues behind
        it, in order). True: stored (points the database refuses are dead-lettered); False: spool it."""
        if self.spool.pending_points:
            return False
        try:
            refused = write_body(self.direct, body)
            self._storage_rejected(refused)
        except StorageError as exc:
            now = time.monotonic()
            if now - self._warned_direct > 30:
                log.warning("database write failed (%s): spooling to disk until it answers again", exc)
                self._warned_direct = now
            self.health.incr("direct_write_failures")
            return False
        except OSError:  # the refused lines could not be dead-lettered: spool the group, the drainer retries
            return False
        if self.on_stored:
            try:
                self.on_stored(split_lines(body))
            except Exception:
                log.exception("on_stored hook failed")
        self._count_stored(body, refused)
        return True

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
            self.spool.commit(pos, body.count(b"\n"))
            self._count_stored(body, refused)
            self._update_spool_gauges()

    def _count_stored(self, body: bytes, refused: list[tuple[bytes, str]]) -> None:
        """`stored` counts device points; the agent's own health points (measurement `agent`) are `stored_own`."""
        own = body.count(OWN_POINT) + body.startswith(OWN_POINT[1:])
        own -= sum(1 for line, _ in refused if line.startswith(OWN_POINT[1:]))
        self.health.incr("stored", body.count(b"\n") - len(refused) - own)
        self.health.incr("stored_own", own)

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
        self.direct.close()
        self.series.save(force=True)
