"""A paho client that reads the broker's stream in large chunks, in groups when messages trickle in, and
acknowledges messages in groups.

- **Buffered reads.** paho-mqtt reads every packet with at least three `recv` calls (the command byte, each
  remaining-length byte, then the body), so a busy QoS 1 subscriber spends much of its CPU in tiny system calls.
  `BufferedSocket` serves those reads from one `recv(64 KiB)` and reports the buffered bytes through `pending()` —
  the hook paho already uses for TLS sockets (and its own websocket wrapper), so its loop keeps reading without
  waiting in select() while bytes are buffered.
- **Read coalescing.** When messages arrive one by one (a house's meters: a few per second), each one wakes the
  network thread, and that wake-up costs several times the message's own processing. After the client has handled
  a read that held fewer than `TRICKLE_PACKETS` packets, it waits `read_coalesce_s` before looking at the socket
  again, so that a trickle is read in groups. Under load every read holds more packets than that and nothing
  waits. (The broker's in-flight window must be larger than `TRICKLE_PACKETS`: Mosquitto's default is 20, the
  shipped configurations use 100.)
- **Grouped acks.** paho's `ack` queues one packet per message, and each one wakes the network thread through its
  socket pair and costs a 4-byte `send`; `ack_many` queues one write for a group.

All three use paho-mqtt 2.x private methods (`_create_socket`, `_loop`, `_packet_queue`). If a paho release renames
them, the overrides are simply never called (or `ack_many` falls back to `ack`): slower, never wrong.
tests/edge_agent/ingest/test_mqtt_socket.py checks that the hooks are in use with the installed paho.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

import paho.mqtt.client as mqtt

from edge_agent.config import AgentConfig

CHUNK = 64 * 1024
TRICKLE_PACKETS = 16


class BufferedSocket:
    """A plain TCP socket whose reads are served from a buffer filled by large `recv` calls."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.kernel_reads = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(bufsize, CHUNK))  # raises BlockingIOError like the socket would
            self.kernel_reads += 1
            if len(data) <= bufsize:
                return data
            self._buf, self._pos = data, 0
        end = self._pos + bufsize
        out = self._buf[self._pos:end]
        self._pos = min(end, len(self._buf))
        return out

    def pending(self) -> int:
        """Bytes received from the kernel but not yet handed to paho."""
        return len(self._buf) - self._pos

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def setsockopt(self, *args) -> None:
        self._sock.setsockopt(*args)

    def close(self) -> None:
        self._buf, self._pos = b"", 0
        self._sock.close()


class BufferedClient(mqtt.Client):
    """paho Client with buffered (and, with `read_coalesce_s` > 0, coalesced) reads and grouped acks."""

    read_coalesce_s = 0.0
    _loops = 0  # network-loop iterations (≈ packets) since the last coalescing decision
    _reads_seen = 0

    def _create_socket(self):  # paho-mqtt 2.x private hook, see the module docstring
        sock = super()._create_socket()
        if isinstance(sock, socket.socket) and not self._ssl and self._transport == "tcp":
            return BufferedSocket(sock)
        return sock

    def _loop(self, timeout: float = 1.0):  # one iteration of paho's network loop (≤ 1 packet read)
        rc = super()._loop(timeout)
        sock = self._sock
        if self.read_coalesce_s > 0 and isinstance(sock, BufferedSocket):
            self._loops += 1
            # Decide once everything read is handled and nothing waits to be sent (e.g. a SUBSCRIBE or acks).
            if sock.kernel_reads != self._reads_seen and not sock.pending() and not self.want_write():
                if self._loops < TRICKLE_PACKETS:
                    time.sleep(self.read_coalesce_s)
                self._reads_seen, self._loops = sock.kernel_reads, 0
        return rc

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK these QoS 1 messages, in order, with one packet write (manual-ack mode)."""
        queue = getattr(self, "_packet_queue", None)
        if queue is None or not mids:
            for mid in mids:
                self.ack(mid, 1)
            return
        queue(mqtt.PUBACK, b"".join(struct.pack("!BBH", mqtt.PUBACK, 2, mid) for mid in mids), 0, 1)


def make_client(config: AgentConfig, client_id: str, manual_ack: bool, clean_session: bool = False) -> mqtt.Client:
    """A paho client for the configured broker: a persistent session, unless `clean_session` (a look that must
    leave nothing behind at the broker, e.g. `edge-agent rules list --sniff`)."""
    c = config.mqtt
    client = BufferedClient(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            clean_session=clean_session, protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    if c.username:
        client.username_pw_set(c.username, c.password)
    if c.tls:
        client.tls_set(ca_certs=c.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=max(1, int(c.reconnect_min_s)), max_delay=max(1, int(c.reconnect_max_s)))
    client.max_queued_messages_set(0)
    client.read_coalesce_s = c.read_coalesce_s if manual_ack else 0.0
    return client
