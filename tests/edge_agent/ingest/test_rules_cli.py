"""`edge-agent rules test | list | list --sniff N`: onboarding a device without guessing.

`rules test` and `rules list` must touch neither broker nor database (checked with listening sockets that must
see no connection); `--sniff` runs against the real broker: retained and live messages, a clean session of its
own, no acknowledgement of the agent's persistent session (its queued messages still reach the agent afterwards)
and no session left behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.helpers.agent import ROOT, start_agent, wait_for
from tools.publish import Publisher

RULES = """
[[rules]]
name = "tasmota"
topic = "tele/+device/SENSOR"
format = "tasmota"
timezone = "Europe/Berlin"

[[rules]]
name = "plugs"
topic = "z2m/+device"
format = "json"
measurement = "plug"
fields = ["power", {path = "state", name = "on", map = {ON = 1, OFF = 0}}]

[[rules]]
name = "shadowed"
topic = "z2m/kitchen"
format = "json"
"""


def write(tmp_path, mqtt_port: int, influx_url: str, db: str = "x", client_id: str = "agent-cli",
          extra: str = "") -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""[agent]
state_dir = "{tmp_path / 'state'}"
[mqtt]
port = {mqtt_port}
client_id = "{client_id}"
reconnect_max_s = 2
{extra}
[storage]
url = "{influx_url}"
database = "{db}"
[spool]
batch_interval_s = 0.2
[health]
interval_s = 3600
{RULES}""")
    return str(cfg)


def cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], cwd=ROOT, input=stdin, capture_output=True,
                          timeout=timeout)


class Listener:
    """A loopback port that counts the connections made to it (a broker or database that must not be used)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                return n
            conn.close()
            n += 1


def test_rules_test_prints_line_protocol_and_touches_nothing(tmp_path):
    broker, db = Listener(), Listener()
    cfg = write(tmp_path, broker.port, f"http://127.0.0.1:{db.port}")
    payload = '{"Time":"2024-03-01T12:00:00","SML":{"Total_in":12345.678,"Total_out":2345.678,"Power_curr":-512}}'
    r = cli("rules", "test", "--config", cfg, "--topic", "tele/stromzaehler/SENSOR", "--payload", payload)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "# rule 'tasmota' (tasmota, tele/+device/SENSOR): 1 point(s)",
        "tasmota,device=stromzaehler,sensor=SML Total_in=12345.678,Total_out=2345.678,Power_curr=-512.0 "
        "1709290800000000000"]
    # from a file and from stdin; a payload without a time gets --time
    (tmp_path / "p.json").write_text('{"power": 41.7, "state": "ON"}')
    r = cli("rules", "test", "--config", cfg, "--topic", "z2m/washer", "--payload-file", str(tmp_path / "p.json"),
            "--time", "2024-03-01T11:00:00Z")
    assert r.stdout.decode().splitlines()[1] == "plug,device=washer power=41.7,on=1.0 1709290800000000000"
    r = cli("rules", "test", "--config", cfg, "--topic", "z2m/washer", "--payload-file", "-", "--time", "1709290800",
            stdin=b'{"power": 1, "state": "OFF"}')
    assert r.returncode == 0 and r.stdout.decode().endswith("on=0.0 1709290800000000000\n")
    assert broker.connections() == 0 and db.connections() == 0


def test_rules_test_says_why_and_which_rule(tmp_path):
    cfg = write(tmp_path, 1, "http://127.0.0.1:1")
    r = cli("rules", "test", "--config", cfg, "--topic", "z2m/washer", "--payload", '{"power": 1, "state": "on"}')
    assert r.returncode == 1
    assert r.stdout.decode().strip() == ("# rejected by rule 'plugs': wrong_type: state is 'on', not one of the "
                                         "rule's map: ON, OFF")
    r = cli("rules", "test", "--config", cfg, "--topic", "z2m/washer", "--payload", "x" * 70000)
    assert r.returncode == 1 and "too_large" in r.stdout.decode()
    r = cli("rules", "test", "--config", cfg, "--topic", "other/topic", "--payload", "1")
    assert r.returncode == 1 and "unknown_topic" in r.stdout.decode()
    assert "# note: the agent does not subscribe to other/topic" in r.stdout.decode()
    narrow = write(tmp_path / "narrow", 1, "http://127.0.0.1:1", extra='subscribe = ["tele/#"]')
    r = cli("rules", "test", "--config", narrow, "--topic", "z2m/washer", "--payload", '{"power": 1, "state": "ON"}')
    assert r.returncode == 0 and r.stdout.decode().splitlines()[-1] == (
        "# note: the agent does not subscribe to z2m/washer (subscriptions: tele/#)")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\ntopic = "a/+b"\nformat = "json"\nfields = ["a..b"]\n')
    r = cli("rules", "test", "--config", str(bad), "--topic", "a/b", "--payload", "{}")
    assert r.returncode == 2 and "rules[0].fields[0].path" in r.stderr.decode()


def test_rules_list_shows_subscriptions_and_unreachable_rules(tmp_path):
    broker, db = Listener(), Listener()
    cfg = write(tmp_path, broker.port, f"http://127.0.0.1:{db.port}", extra='subscribe = ["z2m/#", "junk/#"]')
    r = cli("rules", "list", "--config", cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "  1. tasmota  [tasmota]  tele/+device/SENSOR\n       subscribes: tele/+/SENSOR\n" in out
    assert "measurement: tasmota; tags: device, sensor" in out
    assert "NEVER USED: rule 2 (plugs) takes every topic this one matches" in out
    assert "  z2m/#  → rule 2 (plugs), 3 (shadowed)\n" in out
    assert "  junk/#  → no rule: its messages are dead-lettered (unknown_topic)\n" in out
    assert broker.connections() == 0 and db.connections() == 0


def _session_present(port: int, client_id: str) -> bool:
    """Whether the broker holds a session for `client_id` (connects with clean_session=False, then removes the
    session it may have created by reconnecting with a clean one)."""
    result: dict = {}
    done = threading.Event()
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=False, protocol=mqtt.MQTTv311)
    c.on_connect = lambda cl, u, flags, rc, p=None: (result.update(present=flags.session_present), done.set())
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()
    return result["present"]


def test_sniff_shows_retained_and_live_messages_and_leaves_the_agent_session_alone(
        tmp_path, mosquitto_session, influxd_session, influx_db_name):
    port = mosquitto_session.port
    agent_id = f"agent-{influx_db_name}"[:60]
    cfg = write(tmp_path, port, influxd_session.url, influx_db_name, client_id=agent_id)
    # the agent's persistent session exists (subscribed), and messages queue up for it while it is away
    agent = start_agent(Path(cfg))
    agent.stop()
    pub = Publisher("127.0.0.1", port, client_id=f"pub-{influx_db_name}"[:60])
    queued = [(f"z2m/plug{i}", json.dumps({"power": float(i), "state": "ON"}).encode()) for i in range(5)]
    pub.publish_all(queued)
    retained = '{"Time":"2024-03-01T12:00:00","SML":{"Total_in":1.5}}'
    subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-r", "-t", "tele/sniffed/SENSOR", "-m", retained],
                   check=True)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "rules", "list", "--config", cfg, "--sniff",
                                 "2", "--seconds", "4", "--filter", "z2m/#", "--filter", "tele/#", "--filter",
                                 "junk/#"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        banner = proc.stderr.readline()
        assert "sniffing z2m/#, tele/#, junk/#" in banner and "clean session" in banner, banner
        sniff_id = re.search(r" as (\S+) ", banner).group(1)
        assert sniff_id != agent_id
        pub.publish_all([("z2m/live", b'{"power": 1, "state": "ON"}')] * 3
                        + [("z2m/live2", b'{"power": "x", "state": "ON"}'), ("junk/a", b"1")])
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert ("tele/sniffed/SENSOR (retained)\n  payload: " + retained + "\n  # rule 'tasmota' (tasmota, "
                "tele/+device/SENSOR): 1 point(s)\n  tasmota,device=sniffed,sensor=SML Total_in=1.5 "
                "1709290800000000000\n") in out
        assert out.count("z2m/live\n") == 2  # the first N per topic
        assert "z2m/live2\n  payload: {\"power\": \"x\", \"state\": \"ON\"}\n  # rejected by rule 'plugs': wrong_type" \
            in out
        assert "junk/a (the agent does not subscribe to it)\n  payload: 1\n  # rejected: unknown_topic" in out
        assert "# 6 message(s) on 4 topic(s); no rule takes 1: junk/a\n" in out  # 1 retained + 5 live
        assert "z2m/plug" not in out  # queued for the agent's session, not for anybody subscribing later
        # nothing left behind: no session for the sniffer's client id
        assert _session_present(port, sniff_id) is False
        # nothing acknowledged for the agent: its queued messages reach it now
        agent = start_agent(Path(cfg))
        try:
            def devices():
                q = 'SELECT last(power) FROM plug GROUP BY device'
                res = influxd_session.query(q, db=influx_db_name)["results"][0]
                return {s["tags"]["device"] for s in res.get("series", [])}

            # the messages queued while it was away, and those published while the sniffer ran
            wait_for(lambda: devices() == {f"plug{i}" for i in range(5)} | {"live"}, timeout=20)
        finally:
            agent.stop()
    finally:
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-r", "-n", "-t", "tele/sniffed/SENSOR"],
                       check=True)
        pub.close()


def test_sniff_reports_an_unreachable_broker(tmp_path):
    from tools.services import free_port

    cfg = write(tmp_path, free_port(), "http://127.0.0.1:1")
    start = time.monotonic()
    r = cli("rules", "list", "--config", cfg, "--sniff", "1", "--seconds", "1")
    assert r.returncode == 1 and "unreachable" in r.stderr.decode()
    assert time.monotonic() - start < 30
    r = cli("rules", "list", "--config", cfg, "--sniff", "1", "--filter", "a/#/b")
    assert r.returncode == 2 and "a/#/b" in r.stderr.decode()


def test_sniff_labels_the_agents_own_topics_and_short_windows(tmp_path, mosquitto_session):
    """A fresh demo showed 12 "rejected" lines for the agent's own output and discovery topics; and a 10 s window
    said nothing about devices that publish less often (Tasmota: every 300 s by default)."""
    port = mosquitto_session.port
    cfg = write(tmp_path, port, "http://127.0.0.1:1", extra="")
    with open(cfg, "a") as f:
        # a discovery prefix of its own: other tests leave other nodes' retained discovery on the shared broker
        f.write('\n[publish]\ntopic_prefix = "sniffed-energy"\nnode_id = "sniffnode"\ndiscovery_prefix = "sniff-ha"\n')
    from edge_agent.forecast import away
    from edge_agent.publish import hass

    prefix, node = "sniffed-energy", "sniffnode"  # the topics the agent itself publishes, as it names them
    own = [(hass.availability_topic(prefix), "online"), (hass.forecast_topic(prefix, 1), '{"value_kwh": 0.2}'),
           (hass.skill_topic(prefix, 96), "{}"), (hass.flow_totals_topic(prefix), "{}"),
           (away.state_topic(prefix), "OFF"), (away.window_topic(prefix), '{"to": "2026-12-27T18:00:00Z"}'),
           (hass.legacy_topic("sniff-ha", "sensor", node, "forecast_next_slot"), '{"name": "x"}'),
           (hass.device_topic("sniff-ha", node), '{"cmps": {}}')]
    for topic, payload in own:
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-r", "-t", topic, "-m", payload], check=True)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "rules", "list", "--config", cfg, "--sniff",
                                 "3", "--seconds", "3", "--filter", "sniffed-energy/#", "--filter",
                                 "sniff-ha/#", "--filter", "z2m/#"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert "sniffing" in proc.stderr.readline()
        pub = Publisher("127.0.0.1", port, client_id="pub-sniff-own")
        pub.publish_all([("z2m/washer", b'{"power": 1, "state": "ON"}')])
        time.sleep(1.2)
        pub.publish_all([("z2m/washer", b'{"power": 2, "state": "ON"}'), ("z2m/dryer", b'{"power": 3, "state": "ON"}')])
        pub.close()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "rejected" not in out, out
        assert "sniffed-energy/status (retained)\n  payload: online\n  # the agent's own output: not ingested\n" in out
        assert "sniffed-energy/away/state (retained)\n  payload: OFF\n  # the agent's away input and state: not " \
               "ingested\n" in out
        assert ("sniff-ha/sensor/sniffnode/forecast_next_slot/config (retained)\n  payload: {\"name\": \"x\"}\n"
                "  # the agent's Home Assistant discovery: not ingested\n") in out
        assert "sniff-ha/device/sniffnode/config (retained)\n" in out
        assert "# 11 message(s) on 10 topic(s); 8 of the agent's own (output, away input, discovery: not ingested)\n" \
            in out
        assert out.count(": not ingested\n") == 8 and "(the agent does not subscribe to it)" not in out
        assert "# seen once in 3 s (a period of 3 s or more, or unknown): z2m/dryer\n" in out
        assert "# no message in 3 s for rule(s) shadowed: a device may publish less often than the window" in out
        assert "# a window of 3 s is shorter than many devices' period (the slowest topic here repeats every 1 s)" \
            in out
    finally:
        for topic, _ in own:
            subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-r", "-n", "-t", topic], check=True)
    r = cli("rules", "list", "--help")
    assert "default 60" in r.stdout.decode()


def test_rules_test_shows_ignored_messages_and_numbers_sent_as_text(tmp_path):
    cfg = write(tmp_path, 1, "http://127.0.0.1:1")
    with open(cfg, "a") as f:
        f.write('\n[[rules]]\nname = "shelly"\ntopic = "+device/events/rpc"\nformat = "shelly_gen2"\n')
    event = '{"src":"shellypro3em-1","method":"NotifyEvent","params":{"ts":1,"events":[{"component":"emdata:0",' \
            '"event":"data"}]}}'
    r = cli("rules", "test", "--config", cfg, "--topic", "shellypro3em-1/events/rpc", "--payload", event)
    assert r.returncode == 0
    assert r.stdout.decode().startswith("# ignored by rule 'shelly' (not dead-lettered, counted as ignored): "
                                        "NotifyEvent (emdata:0 data)")
    tic = '{"Time":"2024-03-01T12:00:00","ENERGY":{"Power":270},"TIC":{"BASE":"007970903","PTEC":"TH.."}}'
    r = cli("rules", "test", "--config", cfg, "--topic", "tele/linky/SENSOR", "--payload", tic)
    assert r.returncode == 0
    assert r.stdout.decode().splitlines()[1:] == [
        "tasmota,device=linky,sensor=ENERGY Power=270.0 1709290800000000000",
        "# note: TIC.BASE is a number sent as text ('007970903') and is not stored: set numeric_strings = true in "
        "rule 'tasmota'"]
    r = cli("rules", "list", "--config", cfg)
    assert ("  4. shelly  [shelly_gen2]  +device/events/rpc\n       subscribes: +/events/rpc\n       measurement: "
            "shelly; tags: component, device\n       components: all but the housekeeping (NotifyEvent and "
            "components without numbers are ignored)\n") in r.stdout.decode()
