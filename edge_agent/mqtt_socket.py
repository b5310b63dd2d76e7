"""A paho client that reads the broker's stream in large chunks.

paho-mqtt reads every packet with at least three `recv` calls (the command byte, each remaining-length byte,
then the body), so a busy QoS 1 subscriber spends much of its CPU in tiny system calls. `BufferedSocket` serves
those reads from one `recv(64 KiB)` and reports the buffered bytes through `pending()` — the hook paho already
uses for TLS sockets (and its own websocket wrapper), so its loop keeps reading without waiting in select() while
bytes are buffered.

The client hooks in by overriding paho's `_create_socket`. If a paho release renames that method, the override
is simply never called and the client works unbuffered (slower, never wrong); tests/edge/test_mqtt_socket.py
checks that the hook is in use with the installed paho.
"""

from __future__ import annotations

import socket

import paho.mqtt.client as mqtt

CHUNK = 64 * 1024


class BufferedSocket:
    """A plain TCP socket whose reads are served from a buffer filled by large `recv` calls."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(bufsize, CHUNK))  # raises BlockingIOError like the socket would
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
    """paho Client whose plain TCP connections are read through a `BufferedSocket`."""

    def _create_socket(self):  # paho-mqtt 2.x private hook, see the module docstring
        sock = super()._create_socket()
        if isinstance(sock, socket.socket) and not self._ssl and self._transport == "tcp":
            return BufferedSocket(sock)
        return sock
