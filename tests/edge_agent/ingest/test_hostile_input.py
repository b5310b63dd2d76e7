"""Issue 13's reproductions: messages that stopped all ingest on the first release, through the real agent.

Each bad message must be dead-lettered with a reason while every good message around it is stored exactly once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.ingest.spool import HEADER
from shared.schema import RESERVED_MEASUREMENTS
from tests.helpers.agent import count, start_agent, wait_for, write_config
from tools.publish import Publisher, seed_message

T = datetime(2023, 3, 1, 12, 0, tzinfo=UTC)


def good(i: int) -> tuple[str, bytes]:
    return seed_message("m1", "e", "EnergyMeter", T + timedelta(seconds=i), {"Power": float(i)})


HOSTILE = [
    # RecursionError inside json: the spooler thread died and the message was redelivered after every restart
    ("hack/m1/e", b"[" * 1500, "not_json"),
    # OverflowError in float(int)
    ("hack/m1/e", b'{"FeatureType": "EnergyMeter", "device_id": "m1", "Power": ' + b"9" * 400 + b"}", "not_finite"),
    # a newline in a name split the line in two (an injection), and then crashed the drainer
    ("hack/m1/e", json.dumps({"FeatureType": "X\nEnergyMeter", "device_id": "m1", "Power": 7.0}).encode(),
     "invalid_name"),
    ("hack/m1/e", json.dumps({"FeatureType": "EnergyMeter", "device_id": "m\r1", "Power": 7.0}).encode(),
     "invalid_name"),
    # a measurement starting with '#' is a comment to InfluxDB: counted as stored, never stored
    ("hack/m1/e", json.dumps({"FeatureType": "#EnergyMeter", "device_id": "m1", "Power": 7.0}).encode(),
     "invalid_name"),
    ("hack/m1/e", json.dumps({"FeatureType": "E" * 300, "device_id": "m1", "Power": 7.0}).encode(), "invalid_name"),
    ("hack/m1/e", json.dumps({"FeatureType": "EnergyMeter", "device_id": "m1", "Po\u0000wer": 7.0}).encode(),
     "invalid_name"),
    # a device must not write into what the agent writes itself
    ("hack/m1/e", json.dumps({"FeatureType": "forecast", "device_id": "m1", "value_kwh": 99.0}).encode(),
     "reserved_measurement"),
    ("hack/m1/e", json.dumps({"FeatureType": "energy_flow", "device_id": "m1", "house": 99.0}).encode(),
     "reserved_measurement"),
    ("hack/m1/e", json.dumps({"FeatureType": "agent", "device_id": "m1", "stored": 0}).encode(),
     "reserved_measurement"),
    # a timestamp InfluxDB cannot store
    ("hack/m1/e", json.dumps({"FeatureType": "EnergyMeter", "device_id": "m1", "Power": 1.0,
                              "time": 1e300}).encode(), "bad_timestamp"),
    # deeply nested status objects (within the payload limit, below Python's recursion limit)
    ("dev1/status/em:0", b'{"a":' * 300 + b"1" + b"}" * 300, "too_deep"),
]


def test_hostile_messages_never_stop_ingest(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        stream = []
        for i, (topic, payload, _reason) in enumerate(HOSTILE):
            stream += [good(i), (topic, payload)]
        stream.append(good(len(HOSTILE)))
        pub.publish_all(stream)
        n_good = len(HOSTILE) + 1
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == n_good
                 and agent.health.get("rejected") == len(HOSTILE), timeout=30)
        lines = [json.loads(x) for x in (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()]
        assert [d["reason"] for d in lines] == [r for _, _, r in HOSTILE]
        # nothing of the hostile messages reached the database: no injected second line, no reserved writes
        res = influxd_session.query("SHOW MEASUREMENTS", db=influx_db_name)["results"][0]
        measurements = {v[0] for v in res["series"][0]["values"]}
        assert measurements <= {"EnergyMeter", "agent"}, measurements
        assert count(influxd_session, influx_db_name, "agent", "value_kwh") == 0
        # the threads are alive and a later message is stored
        assert all(t.is_alive() for t in agent.ingest.threads)
        pub.publish_all([good(100)])
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == n_good + 1)
    finally:
        pub.close()
        agent.stop()


def test_reserved_measurement_allowed_by_an_explicit_rule(tmp_path, mosquitto_session, influxd_session,
                                                          influx_db_name):
    extra = """
[[rules]]
name = "import-forecasts"
topic = "import/+measurement"
format = "number"
field = "value_kwh"
allow_reserved = ["forecast"]
"""
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, extra=extra,
                       client_id=f"agent-{influx_db_name}",
                       subscribe='["import/#"]')
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        pub.publish_all([("import/forecast", b"1.5"), ("import/energy_flow", b"2.5")])
        wait_for(lambda: count(influxd_session, influx_db_name, "forecast", "value_kwh") == 1
                 and agent.health.get("rejected_reserved_measurement") == 1)
    finally:
        pub.close()
        agent.stop()


def test_drainer_isolates_any_bad_line_already_in_the_spool(tmp_path, mosquitto_session, influxd_session,
                                                            influx_db_name):
    """Lines that an older agent spooled (or a torn disk gave back) must not stop the drainer."""
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    spool_dir = tmp_path / "state" / "spool"
    spool_dir.mkdir(parents=True)
    t0 = int(T.timestamp()) * 10**9
    body = (f"EnergyMeter,device_id=a Power=1 {t0}\n".encode() + b"X\n" + b"\r\n" + b"\xff\xfe bad\n"
            + b"EnergyMeter,device_id=\\ Power=2\n" + b"Energy\\\n" + b"#comment\n"
            + f"EnergyMeter,device_id=b Power=3 {t0}\n".encode())
    (spool_dir / f"{1:012d}.seg").write_bytes(HEADER.pack(len(body), __import__("zlib").crc32(body)) + body)
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") >= 2, timeout=20)
        pub.publish_all([good(1)])
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == 3, timeout=20)
        assert all(t.is_alive() for t in agent.ingest.threads)
        assert agent.health.get("rejected_storage_rejected") >= 4
        wait_for(lambda: agent.ingest.spool.pending_points == 0)
    finally:
        pub.close()
        agent.stop()


def test_qos0_input_is_bounded(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    """With the spooler held up, QoS 0 messages beyond the queue bound are dropped and counted, not buffered."""
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    cfg.write_text(cfg.read_text().replace("[ingest]\n", "[ingest]\nqueue_max_messages = 50\n")
                   .replace("[mqtt]\n", "[mqtt]\nqos = 0\n"))
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        with agent.ingest.spool._lock:  # the spooler blocks in its next append, as on a stalled disk
            pub.publish_all([good(i) for i in range(500)], qos=0)
            wait_for(lambda: agent.health.get("dropped_qos0") > 0, timeout=10)
            assert agent.ingest.queued_messages <= 50
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power")
                 + agent.health.get("dropped_qos0") == 500, timeout=20)
    finally:
        pub.close()
        agent.stop()


# Templates that are bad by construction (so the test knows each must be dead-lettered), filled by hypothesis.
def _seed(**doc) -> bytes:
    return json.dumps({"FeatureType": "EnergyMeter", "device_id": "m1", "Power": 1.0, **doc}).encode()


_bad_char = st.sampled_from(["\n", "\r", "\x00", "\x1b", "\\", "\x7f"])
hostile = st.one_of(
    st.binary(min_size=1, max_size=200).map(lambda b: b"\xff" + b),  # never UTF-8
    st.integers(1001, 1900).map(lambda n: b"[" * n),
    st.integers(310, 2000).map(lambda n: _seed(Power=10**n)),
    st.tuples(st.text(max_size=8), _bad_char, st.text(max_size=8)).map(lambda t: _seed(FeatureType="".join(t))),
    st.tuples(st.text(max_size=8), _bad_char, st.text(max_size=8)).map(lambda t: _seed(device_id="".join(t))),
    st.tuples(st.text(max_size=8), _bad_char).map(lambda t: _seed(**{"".join(t): 1.0})),
    st.sampled_from(sorted(RESERVED_MEASUREMENTS)).map(lambda m: _seed(FeatureType=m)),
    st.text(min_size=1, max_size=20).map(lambda t: _seed(FeatureType="#" + t)),
    st.one_of(st.text(max_size=10), st.lists(st.integers(), max_size=3), st.booleans()).map(
        lambda v: _seed(Power=v)),
    st.floats(min_value=1e20, allow_infinity=False).map(lambda t: _seed(time=t)),
)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(bad=st.lists(hostile, min_size=50, max_size=150))
def test_generated_hostile_stream(tmp_path_factory, mosquitto_session, influxd_session, bad):
    """Every good message stored exactly once, every hostile one dead-lettered (none as internal_error)."""
    tmp = tmp_path_factory.mktemp("hostile")
    db = tmp.name.replace("-", "_")
    influxd_session.create_database(db)
    agent = start_agent(write_config(tmp, mosquitto_session.port, influxd_session.url, db, client_id=f"a-{db}"))
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"p-{db}")
    try:
        stream = []
        for i, payload in enumerate(bad):
            stream += [good(i), ("hack/m1/e", payload)]
        stream.append(good(len(bad)))
        pub.publish_all(stream)
        wait_for(lambda: agent.health.get("rejected") >= len(bad)
                 and count(influxd_session, db, "EnergyMeter", "Power") >= len(bad) + 1, timeout=30)
        time.sleep(0.5)  # nothing more may arrive
        assert agent.health.get("rejected") == len(bad)
        assert agent.health.get("rejected_internal_error") == 0
        res = influxd_session.query('SELECT count("Power"), sum("Power") FROM "EnergyMeter"', db=db)["results"][0]
        assert res["series"][0]["values"][0][1:] == [len(bad) + 1, sum(range(len(bad) + 1))]
        lines = (tmp / "state" / "deadletter.jsonl").read_text().splitlines()
        assert len(lines) == len(bad)
    finally:
        pub.close()
        agent.stop()


def test_a_quote_in_a_device_name_is_stored(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    """Issue 23, item 4: InfluxDB takes `"` in a tag as it is, but the drainer held every such line back as "not
    self-contained", so a device named with a quote (a topic level) only ever produced dead letters."""
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        pub.publish_all([('tele/plug"1/SENSOR', b'{"Time": "2023-03-01T13:00:00", "ENERGY": {"Power": 5}}'),
                         ("tele/plug2/SENSOR", b'{"Time": "2023-03-01T13:00:00", "ENERGY": {"Power": 6}}')])
        wait_for(lambda: count(influxd_session, influx_db_name, "tasmota", "Power") == 2)
        res = influxd_session.query('SELECT "Power" FROM "tasmota" WHERE "device" = \'plug"1\'',
                                    db=influx_db_name)["results"][0]
        assert res["series"][0]["values"][0][1] == 5
        assert agent.health.get("rejected") == 0
    finally:
        pub.close()
        agent.stop()


def test_series_beyond_the_bound_are_dead_lettered(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    """Issue 23, item 6: 10,000 device topics made 10,001 series silently. With ingest.max_series_per_rule a
    rule's new series beyond the bound are dead-lettered (too_many_series) and counted, known ones go on, and
    the known series survive a restart."""
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    cfg.write_text(cfg.read_text().replace("[ingest]\n", "[ingest]\nmax_series_per_rule = 5\n"))

    def plug(n: int, power: float) -> tuple[str, bytes]:
        return f"tele/plug{n}/SENSOR", json.dumps({"Time": "2023-03-01T13:00:00", "ENERGY": {"Power": power}},
                                                  ).encode()

    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        pub.publish_all([plug(n, float(n)) for n in range(10)])
        wait_for(lambda: agent.health.get("rejected_too_many_series") == 5)
        wait_for(lambda: count(influxd_session, influx_db_name, "tasmota", "Power") == 5)
        entries = [json.loads(x) for x in (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()]
        assert [e["topic"] for e in entries] == [f"tele/plug{n}/SENSOR" for n in range(5, 10)]
        assert "max_series_per_rule = 5" in entries[0]["detail"]
        assert agent.health.get("series") == 5
        agent.stop()
        agent = start_agent(cfg)  # the known series come back from state_dir/series.json
        pub.publish_all([plug(0, 100.0), plug(7, 107.0)])
        wait_for(lambda: agent.health.get("rejected_too_many_series") == 1 and agent.health.get("received") == 2)
        wait_for(lambda: influxd_session.query('SELECT max("Power") FROM "tasmota"', db=influx_db_name)
                 ["results"][0]["series"][0]["values"][0][1] == 100.0)
    finally:
        pub.close()
        agent.stop()


# The text formats and the notifications that are normal (issue 23): hostile text is dead-lettered, Shelly's
# NotifyEvent is neither stored nor dead-lettered, good records around them are stored exactly once.
TEXT_RULES = """
[[rules]]
name = "csv"
topic = "csv/+node/values"
format = "csv"
measurement = "csvgood"
columns = ["t", "power", "dir"]
fields = [{ path = "power", sign = { path = "dir", negative = ["export"], positive = ["import"] } }]
time_path = "t"
time_format = "epoch_s"

[[rules]]
name = "kv"
topic = "kv/+device"
format = "key_value"
measurement = "kvgood"
"""
T_TEXT = 1_700_000_000


def good_csv(i: int) -> tuple[str, bytes]:
    return "csv/1/values", f"{T_TEXT + i},{i},import".encode()


_word = st.text(alphabet="abcdefxyz", min_size=1, max_size=6)
hostile_text = st.one_of(
    st.tuples(st.just("csv/1/values"), st.one_of(
        st.binary(min_size=1, max_size=100).map(lambda b: b"\xff" + b),  # not_utf8
        st.integers(310, 999).map(lambda n: f"{T_TEXT},1e{n},import".encode()),  # not_finite
        _word.map(lambda w: f"{T_TEXT},{w},import".encode()),  # wrong_type: the selected value is a word
        _word.map(lambda w: f"{T_TEXT},5,{w}".encode()),  # wrong_type: a direction in neither list
        st.just(f"{T_TEXT}".encode()), st.just(b""),  # missing_field
        st.integers(1, 10**6).map(lambda n: f"{n * 10**12},1,import".encode()))),  # bad_timestamp
    st.tuples(st.just("kv/relay"), st.one_of(
        _word.map(lambda w: f"soc=1,{w},p=2".encode()),  # wrong_type: not key=value
        st.sampled_from([b"time=1", b"a\nb=1", b"a\\b=2"]),  # invalid_name
        _word.map(lambda w: f"mode={w},fw={w}".encode()),  # missing_field: no number
        st.integers(310, 999).map(lambda n: f"soc=1e{n}".encode()))),  # not_finite
)
NOTIFY_EVENT = json.dumps({"src": "shellypro3em-1", "method": "NotifyEvent", "params": {
    "ts": 1709294460.0, "events": [{"component": "emdata:0", "id": 0, "event": "data", "ts": 1709294400.0,
                                    "data": {"ts": 1709294400, "period": 60, "values": [[0.4, 231.2]]}}]}}).encode()


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(bad=st.lists(hostile_text, min_size=40, max_size=120))
def test_generated_hostile_text_stream(tmp_path_factory, mosquitto_session, influxd_session, bad):
    tmp = tmp_path_factory.mktemp("hostiletext")
    db = tmp.name.replace("-", "_")
    influxd_session.create_database(db)
    agent = start_agent(write_config(tmp, mosquitto_session.port, influxd_session.url, db, client_id=f"a-{db}",
                                     extra=TEXT_RULES, subscribe='["csv/#", "kv/#", "+/events/rpc"]'))
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"p-{db}")
    try:
        stream = []
        for i, (topic, payload) in enumerate(bad):
            stream += [good_csv(i), (topic, payload)]
            if i % 10 == 0:
                stream.append(("shellypro3em-1/events/rpc", NOTIFY_EVENT))
        stream.append(good_csv(len(bad)))
        events = sum(1 for t, _ in stream if t.endswith("/rpc"))
        pub.publish_all(stream)
        wait_for(lambda: agent.health.get("rejected") + agent.health.get("ignored") >= len(bad) + events
                 and count(influxd_session, db, "csvgood", "power") >= len(bad) + 1, timeout=30)
        time.sleep(0.5)  # nothing more may arrive
        assert agent.health.get("rejected") == len(bad)
        assert agent.health.get("ignored") == events
        assert agent.health.get("rejected_internal_error") == 0
        res = influxd_session.query('SELECT count("power"), sum("power") FROM "csvgood"', db=db)["results"][0]
        assert res["series"][0]["values"][0][1:] == [len(bad) + 1, sum(range(len(bad) + 1))]
        lines = [json.loads(x) for x in (tmp / "state" / "deadletter.jsonl").read_text().splitlines()]
        assert len(lines) == len(bad) and all(d["rule"] in ("csv", "kv") for d in lines)
        assert "kvgood" not in {v[0] for v in influxd_session.query("SHOW MEASUREMENTS", db=db)["results"][0]
                                ["series"][0]["values"]}
    finally:
        pub.close()
        agent.stop()
