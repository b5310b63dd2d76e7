"""Messages → line protocol or dead-letter entries: the ingest step that sees what devices send.

Each message is converted on its own, and nothing it holds can escape as an exception: a parser's `Reject`
becomes a dead-letter entry with its reason, any other exception (a parser bug) one with reason
`internal_error` and the exception type. Pure: no I/O, so it is fuzzed directly (tests/edge_agent/ingest/test_fuzz_ingest.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.ingest.deadletter import DeadLetter
from edge_agent.ingest.formats import Ignored, Reject
from edge_agent.ingest.rules import Router, Rule
from edge_agent.ingest.series import SeriesLimit
from edge_agent.runtime.health import Health
from edge_agent.runtime.mqtt_client import EXCERPT_BYTES
from shared.points import Point

log = logging.getLogger(__name__)


class Message(Protocol):
    """What the converter needs of an MQTT message (paho's MQTTMessage has it). An oversized message also has
    `oversize`, its payload's real length, and only its first bytes as `payload` (edge_agent/runtime/mqtt_client.py)."""

    topic: str
    payload: bytes
    qos: int


@dataclass
class Converted:
    body: bytes = b""  # line protocol, one point per line, each ending in a newline
    points: int = 0
    rejects: list[dict] = field(default_factory=list)  # dead-letter entries
    # normal messages with nothing to store ({topic, rule, detail}), and numbers sent as text that converted
    # messages held but their rules did not store ({topic, rule, skipped: [(path, text)]}): ingest/notes.py
    ignored: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def count_rejects(health: Health, rejects: list[dict]) -> None:
    """Count dead-lettered messages per reason (once they are on disk: a group may be converted twice)."""
    for r in rejects:
        health.incr(f"rejected_{r['reason']}")
    health.incr("rejected", len(rejects))


class Converter:
    def __init__(self, router: Router, max_payload_bytes: int, series: SeriesLimit | None = None):
        self.router = router
        self.max_payload_bytes = max_payload_bytes
        self.series = series
        self._last_received_ns = 0

    def _group_time(self, n: int) -> int:
        """The receive time of a group of n messages (wall clock, ns), after the previous group's times."""
        base = max(time.time_ns(), self._last_received_ns + 1)
        self._last_received_ns = base + n
        return base

    def _reject(self, out: Converted, topic: str, payload: bytes, reason: str, detail: str,
                rule: str | None, payload_bytes: int | None = None) -> None:
        log.debug("rejected message on %s: %s: %s", topic, reason, detail)
        out.rejects.append(DeadLetter.entry(topic, payload, reason, detail, rule, payload_bytes))

    def convert(self, messages: list[Message], received_ns: int | None = None) -> Converted:
        out = Converted()
        body: list[bytes] = []
        limit = self.max_payload_bytes
        # For devices that send no time of their own: the group's receive time, so that the fields a device sends
        # on several topics at once land in one point, but a topic seen again in the group gets the next
        # nanosecond: two readings of one field that arrive together (a burst after a reconnect) must not share a
        # time, or InfluxDB keeps only the last.
        base = self._group_time(len(messages)) if received_ns is None else received_ns
        seen: dict[str, int] = {}
        for msg in messages:
            payload = bytes(msg.payload)
            try:
                topic = msg.topic
            except UnicodeDecodeError:  # MQTT topics are UTF-8; a broken broker or client could still send one
                topic = bytes(getattr(msg, "_topic", b"")).decode("utf-8", errors="replace")
                self._reject(out, topic, payload, "not_utf8", "topic is not UTF-8", None)
                continue
            size = getattr(msg, "oversize", 0) or len(payload)
            if size > limit:  # dead-lettered with an excerpt and its size: the file never grows by the payload
                self._reject(out, topic, payload[:EXCERPT_BYTES], "too_large",
                             f"payload has {size} bytes, limit {limit} (ingest.max_payload_bytes); "
                             f"the first {min(size, EXCERPT_BYTES)} are kept", None, size)
                continue
            try:
                now_ns = base + seen.get(topic, 0)
                seen[topic] = seen.get(topic, 0) + 1
                rule, points = self.router.route(topic, payload, now_ns)
                keys = [p.series_key() for p in points]
                if self.series is not None:
                    points, keys = self._admit(out, rule, topic, payload, points, keys)
                lines = "".join(p.to_line(k) + "\n" for p, k in zip(points, keys, strict=True)).encode("utf-8")
            except Reject as rej:
                self._reject(out, topic, payload, rej.reason, rej.detail, rej.rule)
                continue
            except Ignored as ign:
                out.ignored.append({"topic": topic, "rule": ign.rule, "detail": ign.detail})
                continue
            except Exception as exc:  # a parser bug must cost one message, not the pipeline
                log.warning("internal error on a message on %s (dead-lettered): %s: %s", topic,
                            type(exc).__name__, exc)
                self._reject(out, topic, payload, "internal_error", f"{type(exc).__name__}: {str(exc)[:200]}",
                             None)
                continue
            body.append(lines)
            out.points += len(points)
            if skipped := getattr(points, "skipped", None):
                out.skipped.append({"topic": topic, "rule": rule.name, "skipped": skipped})
        out.body = b"".join(body)
        return out

    def _admit(self, out: Converted, rule: Rule, topic: str, payload: bytes, points: list[Point],
               keys: list[str]) -> tuple[list[Point], list[str]]:
        """The points whose series the rule may write; the message is dead-lettered if it had others."""
        name = rule.name or rule.pattern.text
        admitted = [self.series.admit(name, k) for k in keys]
        if all(admitted):
            return points, keys
        refused = admitted.count(False)
        self._reject(out, topic, payload, "too_many_series",
                     f"{refused} of {len(points)} points would start a new series beyond "
                     f"ingest.max_series_per_rule = {self.series.max_per_rule} (rule {name!r})", rule.name)
        return ([p for p, ok in zip(points, admitted, strict=True) if ok],
                [k for k, ok in zip(keys, admitted, strict=True) if ok])
