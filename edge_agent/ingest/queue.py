"""Received MQTT messages waiting for the spooler: bounded in count and bytes (issue 13: QoS 0 input had no
limit)."""

from __future__ import annotations

import collections
import threading

import paho.mqtt.client as mqtt


class MessageQueue:
    """Received messages waiting for the spooler, bounded in count and payload bytes.

    `put(block=True)` (QoS 1/2) waits for room: the network thread stops reading, the broker holds the rest.
    `put(block=False)` (QoS 0) returns False when full: the caller drops and counts the message."""

    def __init__(self, max_messages: int, max_bytes: int):
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self._items: collections.deque[mqtt.MQTTMessage] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
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
            self._bytes += size
            self._cond.notify_all()
        return True

    def get_batch(self, timeout: float, linger: float, max_n: int) -> list[mqtt.MQTTMessage]:
        """Up to max_n messages; waits `timeout` for the first, then (if it came alone) `linger` for company."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items, timeout):
                return []
            if len(self._items) == 1 and linger > 0:
                self._cond.wait_for(lambda: len(self._items) >= max_n, linger)
            batch = [self._items.popleft() for _ in range(min(max_n, len(self._items)))]
            self._bytes -= sum(len(m.payload) for m in batch)
            self._cond.notify_all()
            return batch

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
