"""The agent's MQTT connections, one factory for all of them (ingest, publish, away, weather, tariff): a paho
client that reads the broker's stream in large chunks, in groups when messages trickle in, and acknowledges
messages in groups.

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
- **Oversized messages are streamed past, not read.** paho reads a whole packet into memory before any callback,
  so one 200 MiB PUBLISH needs 200 MiB (and more in copies): under the unit's MemoryMax the kernel killed the agent
  before it could acknowledge, and the broker redelivered it after every restart (issue 23). With
  `max_publish_bytes` set, a PUBLISH whose packet is longer is read in `CHUNK`s, keeping only its topic, packet id
  and the first `EXCERPT_BYTES` of the payload; paho then handles that short packet as usual (acks, QoS 2), and the
  message reaches `on_message` with `oversize` = the payload's real length, so the pipeline dead-letters and
  acknowledges it. Memory per message is bounded by the limit, whatever a client sends.

The overrides use paho-mqtt 2.x private methods (`_create_socket`, `_loop`, `_packet_queue`, `_packet_read`,
`_in_packet`, `_handle_on_message`). If a paho release renames them, the overrides are simply never called (or
`ack_many` falls back to `ack`): slower, or unbounded again, never wrong.
tests/edge_agent/runtime/test_mqtt_client.py checks that the hooks are in use with the installed paho, and
tests/edge_agent/ingest/test_oversized.py that a 200 MiB message passes an agent held to 256 MiB.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge_agent.config import AgentConfig

log = logging.getLogger(__name__)

EXCERPT_BYTES = 1024  # what is kept of an oversized payload: the dead-letter entry's excerpt (edge_agent.ingest)
CHUNK = 64 * 1024
TRICKLE_PACKETS = 16
TOPIC_ALLOWANCE = 2 + 65535 + 2  # a PUBLISH's topic length, longest topic and packet id
READS_PER_CALL = 1024  # chunks of an oversized packet per network-loop iteration (then keep-alive gets a turn)


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


_CONNECT_ASYNC = mqtt._ConnectionState.MQTT_CS_CONNECT_ASYNC  # paho-mqtt 2.x private


class OversizedMessage:
    """A delivered message whose payload was cut to its first bytes; `oversize` is the payload's real length.
    (paho's MQTTMessage has __slots__: it cannot carry the size itself.)"""

    def __init__(self, message: mqtt.MQTTMessage, size: int):
        self._message = message
        self.oversize = size

    def __getattr__(self, name: str):
        return getattr(self._message, name)


class BufferedClient(mqtt.Client):
    """paho Client with buffered (and, with `read_coalesce_s` > 0, coalesced) reads and grouped acks."""

    read_coalesce_s = 0.0
    max_publish_bytes = 0  # > 0: PUBLISH packets longer than this are streamed past (module docstring)
    _loops = 0  # network-loop iterations (≈ packets) since the last coalescing decision
    _reads_seen = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # payload sizes of oversized messages read but not yet delivered, by (QoS, packet id)
        self._oversized: dict[tuple[int, int], int] = {}
        self.on_thread_failure: Callable[[BaseException], None] | None = None
        self.thread_restarts = 0

    # -- the network thread, supervised ---------------------------------------------------------------------
    def _thread_main(self) -> None:  # paho-mqtt 2.x private: what loop_start() runs in its thread
        """paho's network loop, supervised like the agent's workers (edge_agent/runtime/supervise.py): whatever
        escapes it (an exception in a callback, a parser bug) is logged and counted (`on_thread_failure`), the
        connection is dropped (the packet being read is lost mid-way; unacknowledged messages come again) and
        the loop reconnects after a backoff (1 s doubling to 30 s), instead of the thread ending for good and
        the client going deaf (issue 23: deep JSON on the away topic)."""
        backoff = 1.0
        try:
            while not self._thread_terminate:
                started = time.monotonic()
                try:
                    self.loop_forever(retry_first_connection=True)
                    return
                except Exception as exc:
                    self.thread_restarts += 1
                    log.exception("MQTT network thread of %s failed; reconnecting in %.0f s",
                                  self._client_id.decode(errors="replace"), backoff)
                    if self.on_thread_failure:
                        with contextlib.suppress(Exception):
                            self.on_thread_failure(exc)
                with contextlib.suppress(Exception):
                    self._sock_close()
                self._state = _CONNECT_ASYNC  # loop_forever reconnects first (and resets the packet state)
                if time.monotonic() - started > 60:
                    backoff = 1.0
                deadline = time.monotonic() + backoff
                while not self._thread_terminate and time.monotonic() < deadline:
                    time.sleep(0.1)
                backoff = min(backoff * 2, 30.0)
        finally:
            self._thread = None

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

    # -- oversized PUBLISH packets (module docstring) ------------------------------------------------------
    def _packet_read(self) -> mqtt.MQTTErrorCode:  # paho-mqtt 2.x private: read (part of) one packet
        if self.max_publish_bytes <= 0:
            return super()._packet_read()
        p = self._in_packet
        if not p["have_remaining"]:
            rc = self._read_fixed_header()
            if rc is not None:
                return rc
        if p["command"] & 0xF0 == mqtt.PUBLISH and p["remaining_length"] > self.max_publish_bytes:
            return self._read_oversized()
        return super()._packet_read()  # paho sees the header read and goes on with the body

    def _read_fixed_header(self) -> mqtt.MQTTErrorCode | None:
        """The command byte and the remaining length, into paho's `_in_packet`, as paho itself reads them
        (a byte at a time, resumable); None once both are there."""
        p = self._in_packet
        try:
            if p["command"] == 0:
                command = self._sock_recv(1)
                if not command:
                    return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
                p["command"] = command[0]
            while True:
                byte = self._sock_recv(1)
                if not byte:
                    return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
                p["remaining_count"].append(byte[0])
                if len(p["remaining_count"]) > 4:  # at most four length bytes: a broken or hostile peer
                    return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
                p["remaining_length"] += (byte[0] & 127) * p["remaining_mult"]
                p["remaining_mult"] *= 128
                if not byte[0] & 128:
                    break
        except BlockingIOError:
            return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError:
            return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
        p["have_remaining"] = 1
        p["to_process"] = p["remaining_length"]
        return None

    def _read_oversized(self) -> mqtt.MQTTErrorCode:
        """Read an oversized PUBLISH in chunks, keeping its head; hand paho the head as a short packet."""
        p = self._in_packet
        keep = TOPIC_ALLOWANCE + EXCERPT_BYTES
        for _ in range(READS_PER_CALL):
            if p["to_process"] <= 0:
                break
            try:
                data = self._sock_recv(min(p["to_process"], CHUNK))
            except BlockingIOError:
                return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:
                return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
            if not data:
                return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
            p["to_process"] -= len(data)
            if len(p["packet"]) < keep:
                p["packet"] += data[:keep - len(p["packet"])]
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
        if p["to_process"] > 0:
            return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN  # the rest in the next loop iteration
        head = bytes(p["packet"])
        qos = (p["command"] & 0x06) >> 1
        header = 2 + int.from_bytes(head[:2], "big") + (2 if qos else 0)
        mid = int.from_bytes(head[header - 2:header], "big") if qos else 0
        self._oversized[(qos, mid)] = p["remaining_length"] - header
        p["packet"] = bytearray(head[:header + EXCERPT_BYTES])
        return super()._packet_read()  # nothing left to read: paho decodes, acks as usual, resets its state

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:  # paho-mqtt 2.x private
        if self._oversized:
            size = self._oversized.pop((message.qos, message.mid), None)
            if size is not None:
                message = OversizedMessage(message, size)  # type: ignore[assignment]
        super()._handle_on_message(message)

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK these QoS 1 messages, in order, with one packet write (manual-ack mode)."""
        queue = getattr(self, "_packet_queue", None)
        if queue is None or not mids:
            for mid in mids:
                self.ack(mid, 1)
            return
        queue(mqtt.PUBACK, b"".join(struct.pack("!BBH", mqtt.PUBACK, 2, mid) for mid in mids), 0, 1)


def make_client(config: AgentConfig, client_id: str, manual_ack: bool, clean_session: bool = False,
                on_thread_failure: Callable[[BaseException], None] | None = None) -> mqtt.Client:
    """A paho client for the configured broker: a persistent session, unless `clean_session` (a look that must
    leave nothing behind at the broker, e.g. `edge-agent rules list --sniff`). `on_thread_failure` hears of
    every failure its network thread survives (counted by the agent's health)."""
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
    # a payload over the limit is dead-lettered anyway: never hold more of it than its head (module docstring)
    client.max_publish_bytes = config.ingest.max_payload_bytes + TOPIC_ALLOWANCE
    client.on_thread_failure = on_thread_failure
    return client
