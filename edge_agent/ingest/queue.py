"""Received MQTT messages waiting for the spooler: bounded in count and bytes (issue 13: QoS 0 input had no
limit)."""

from __future__ import annotations

import collections
import threading
import time

import paho.mqtt.client as mqtt


class MessageQueue:
    """Received messages waiting for the spooler, bounded in count and payload bytes.

    `put(block=True)` (QoS 1/2) waits for room: the network thread stops reading, the broker holds the rest.
    `put(block=False)` (QoS 0) returns False when full: the caller drops and counts the message."""

    def __init__(self, max_messages: int, max_bytes: int):
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self._items: collections.deque[mqtt.MQTTMessage] = collections.deque()
        self._arrived: collections.deque[float] = collections.deque()  # monotonic arrival time of each item
        self._bytes = 0
        self._cond = threading.Condition()
        self._flush = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def _full(self, size: int) -> bool:
        return bool(self._items) and (len(self._items) >= self.max_messages or self._bytes + size > self.max_bytes)

    def put(self, msg: mqtt.MQTTMessage, block: bool) -> bool:
        size = len(msg.payload)
        with self._cond:
            while self._full(size):
                if not block or self.closed:
                    return False
                self._cond.wait(0.5)
            self._items.append(msg)
            self._arrived.append(time.monotonic())
            self._bytes += size
            self._cond.notify_all()
        return True

    def get_batch(self, timeout: float, linger: float, max_n: int, min_n: int = 1) -> list[mqtt.MQTTMessage]:
        """The next group: waits `timeout` for a first message, then until `min_n` are queued, the oldest has waited
        `linger` seconds, or `flush()` is called; returns up to `max_n` (all that are queued, under load)."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items or self.closed, timeout):
                return []
            while self._items and len(self._items) < min_n and not self._flush and not self.closed:
                left = self._arrived[0] + linger - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._flush = False
            batch = [self._items.popleft() for _ in range(min(max_n, len(self._items)))]
            for _ in batch:
                self._arrived.popleft()
            self._bytes -= sum(len(m.payload) for m in batch)
            self._cond.notify_all()
            return batch

    def flush(self) -> None:
        """End the current group's wait now (the flow is about to read the database)."""
        with self._cond:
            if self._items:
                self._flush = True
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
