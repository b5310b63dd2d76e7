"""The read-buffered paho client against a real Mosquitto: the hook is in use, and every byte arrives intact."""

import hashlib
import socket
import threading

import paho.mqtt.client as mqtt

from edge_agent.mqtt_socket import CHUNK, BufferedClient, BufferedSocket
from tests.support.publish import Publisher


def test_buffered_socket_serves_small_reads_from_one_recv():
    a, b = socket.socketpair()
    try:
        wrapped = BufferedSocket(a)
        b.sendall(b"\x30\x05hello\x40\x02\x00\x01")
        assert wrapped.recv(1) == b"\x30" and wrapped.pending() == 10
        assert wrapped.recv(1) == b"\x05" and wrapped.recv(5) == b"hello"
        assert wrapped.recv(100) == b"\x40\x02\x00\x01" and wrapped.pending() == 0
        b.sendall(b"x" * 10)
        assert wrapped.recv(100) == b"x" * 10  # small arrivals are passed straight through
        b.close()
        assert wrapped.recv(1) == b""  # end of stream is reported, not swallowed
    finally:
        a.close()


def test_subscriber_receives_many_and_large_messages_in_order(mosquitto_session):
    """QoS 1 with manual acks, as the agent uses it: small messages packed into one read, and payloads larger
    than the read chunk, all intact and in order."""
    payloads = [f"m{i}".encode() * (1 + i % 7) for i in range(3000)]
    payloads[1500] = bytes(range(256)) * (3 * CHUNK // 256 + 5)  # spans several chunks
    got: list[bytes] = []
    done = threading.Event()
    sub = BufferedClient(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="buffered-sub",
                         clean_session=False, manual_ack=True)

    def on_message(client, userdata, msg):
        got.append(msg.payload)
        client.ack(msg.mid, msg.qos)
        if len(got) == len(payloads):
            done.set()

    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("buffered/#", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", mosquitto_session.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        assert isinstance(sub.socket(), BufferedSocket), "paho no longer calls _create_socket: reads are unbuffered"
        pub = Publisher("127.0.0.1", mosquitto_session.port, client_id="buffered-pub")
        pub.publish_all(("buffered/t", p) for p in payloads)
        pub.close()
        assert done.wait(30), f"received {len(got)} of {len(payloads)}"
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert [hashlib.sha256(p).digest() for p in got] == [hashlib.sha256(p).digest() for p in payloads]
