"""The agent's paho client against a real Mosquitto: buffered and coalesced reads (the hooks are in use, every
byte arrives intact, a trickle is read in groups) and grouped acks that the broker honours."""

import hashlib
import socket
import threading
import time

import paho.mqtt.client as mqtt

from edge_agent.runtime.mqtt_client import CHUNK, BufferedClient, BufferedSocket
from tools.publish import Publisher


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


def _client(client_id: str) -> BufferedClient:
    return BufferedClient(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                          clean_session=False, manual_ack=True)


def test_subscriber_receives_many_and_large_messages_in_order(mosquitto_session):
    """QoS 1 with manual acks, as the agent uses it: small messages packed into one read, and payloads larger
    than the read chunk, all intact and in order."""
    payloads = [f"m{i}".encode() * (1 + i % 7) for i in range(3000)]
    payloads[1500] = bytes(range(256)) * (3 * CHUNK // 256 + 5)  # spans several chunks
    got: list[bytes] = []
    done = threading.Event()
    sub = _client("buffered-sub")
    sub.read_coalesce_s = 0.1  # as the agent runs it: under load nothing waits

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


class _Subscriber:
    """A manual-ack QoS 1 subscriber on `topic` that records what it receives."""

    def __init__(self, port: int, client_id: str, topic: str, coalesce_s: float = 0.0):
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = _client(client_id)
        self.client.read_coalesce_s = coalesce_s
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, msg: self.messages.append(msg)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def wait_for(self, n: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.messages) >= n, f"received {len(self.messages)} of {n}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _trickle(port: int, topic: str, n: int, gap_s: float) -> None:
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"trickle-{topic}")
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for i in range(n):
        pub.publish(topic, str(i), qos=1).wait_for_publish(5)
        time.sleep(gap_s)
    pub.disconnect()
    pub.loop_stop()


def test_a_trickle_of_messages_is_read_in_groups(mosquitto_session):
    reads = {}
    for coalesce in (0.0, 0.3):
        topic = f"trickle/{coalesce}"
        sub = _Subscriber(mosquitto_session.port, f"trickle-sub-{coalesce}", topic, coalesce)
        try:
            sock = sub.client.socket()
            assert isinstance(sock, BufferedSocket)
            before = sock.kernel_reads
            _trickle(mosquitto_session.port, topic, 12, 0.025)
            sub.wait_for(12)
            reads[coalesce] = sock.kernel_reads - before
            assert [m.payload for m in sub.messages] == [str(i).encode() for i in range(12)]
            sub.client.ack_many([m.mid for m in sub.messages])
        finally:
            sub.close()
    assert reads[0.0] >= 6, reads  # one read per message when every message wakes the client
    assert reads[0.3] <= 4, reads  # paho no longer calls _loop, or the coalescing rule changed


def test_ack_many_acknowledges_a_group_the_broker_does_not_redeliver(mosquitto_session):
    """Acked with one ack_many: not redelivered to the persistent session. Not acked: redelivered."""
    port = mosquitto_session.port
    for acked in (True, False):
        topic, client_id = f"acks/{acked}", f"acks-sub-{acked}"
        sub = _Subscriber(port, client_id, topic)
        pub = Publisher("127.0.0.1", port, client_id=f"acks-pub-{acked}")
        pub.publish_all((topic, str(i).encode()) for i in range(50))
        pub.close()
        sub.wait_for(50)
        if acked:
            sub.client.ack_many([m.mid for m in sub.messages])
            time.sleep(0.3)  # the network thread sends the group
        sub.close()
        again = _Subscriber(port, client_id, topic)
        try:
            time.sleep(1.0)
            redelivered = sorted(int(m.payload) for m in again.messages)
            again.client.ack_many([m.mid for m in again.messages])
        finally:
            again.close()
        assert redelivered == ([] if acked else list(range(50))), (acked, redelivered)


def test_network_thread_survives_a_callback_that_raises(mosquitto_session):
    """Issue 23, item 3: an exception escaping paho's loop (here: from on_message) ended the client's thread for
    good, and nothing noticed. The agent's client counts it, reconnects and goes on receiving."""
    got, failures = [], []

    def on_message(client, userdata, msg):
        if msg.payload == b"boom":
            raise RecursionError("maximum recursion depth exceeded")  # what deep JSON raised in away.py
        got.append(msg.payload)

    c = BufferedClient(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="supervised-sub",
                       clean_session=True)
    c.on_thread_failure = failures.append
    c.reconnect_delay_set(1, 1)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("poison/#", qos=0)
    c.connect("127.0.0.1", mosquitto_session.port)
    c.loop_start()
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id="poison-pub")
    try:
        time.sleep(0.5)
        pub.publish_all([("poison/1", b"boom")], qos=0)
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(failures) == 1 and isinstance(failures[0], RecursionError) and c.thread_restarts == 1
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:  # reconnected after the backoff, subscribed again
            pub.publish_all([("poison/2", b"fine")], qos=0)
            time.sleep(0.5)
        assert got and got[0] == b"fine"
        assert c._thread is not None and c._thread.is_alive()
    finally:
        pub.close()
        c.disconnect()
        c.loop_stop()
    assert c._thread is None  # stopping still ends the thread
