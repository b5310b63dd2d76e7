"""Property-based tests (hypothesis) of everything ingest does with what devices send.

- every payload format, through the converter: any bytes, any JSON shape → line protocol, one dead-letter entry
  or one `ignored` note per message, never an exception, never `internal_error`, never a line the database would
  misread (the `json` format with every setting it has, a sign from another field, tasmota's sensor objects by tag
  and by measurement and numbers sent as text, Shelly notifications with a component filter, the text formats
  `csv` and `key_value` with every setting, exact conversions);
- the topic matcher (value lists included) against paho's own MQTT filter matching of its subscriptions;
- `line_head` on any bytes, and on the lines `Point.to_line` writes.
The database-facing properties (names round-trip through influxd, the drainer's isolation) are in
tests/shared/test_points_fuzz.py and tests/edge_agent/ingest/test_fuzz_drainer.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import load_config
from edge_agent.ingest.convert import Converter
from edge_agent.ingest.rules import Router, TopicPattern, load_rules
from shared.points import Point, line_head
from shared.schema import RESERVED_MEASUREMENTS
from tests.helpers.agent import write_config

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# json rules that use every setting of the format (paths with wildcards and indices, maps, numeric strings,
# globs, tags/measurement/time from paths, conversions, a scale that overflows), and tasmota by measurement.
JSON_RULES = """
[[rules]]
name = "fuzz-json-fields"
topic = "z2m/+device"
format = "json"
measurement = "plug"
measurement_path = "type"
fields = [{path = "power", optional = true}, {path = "energy", name = "EnergyIn", convert = "Wh->kWh", optional = true},
          {path = "state", name = "on", map = {ON = 1, OFF = 0, "true" = 1}, optional = true},
          {path = "meta.*.v", optional = true}, {path = "list[-1]", optional = true}]
include = ["x*", "meta.*"]
exclude = ["meta.t"]
numeric_strings = true
tag_paths = { phase = "meta.phase", id = "id" }
time_path = "meta.t"
time_format = "epoch_ms"
timezone = "Europe/Berlin"
convert = { power = "kW->W" }

[[rules]]
name = "fuzz-json-all"
topic = "all/+device"
format = "json"
time_path = "t"
time_format = "%Y-%m-%d %H:%M:%S"
separator = "."

[[rules]]
name = "fuzz-victron"
topic = "N/+portal/+service=battery/+instance/#field=Dc/0/Power|Soc"
format = "json"
measurement = "victron"
fields = ["value"]
scale = 1e300

[[rules]]
name = "fuzz-dsmr"
topic = "dsmr/json"
format = "json"
measurement = "dsmr"
numeric_strings = true
time_path = "timestamp"
time_format = "iso"

[[rules]]
name = "fuzz-tasmota-measurement"
topic = "tasm/+device/SENSOR"
format = "tasmota"
sensor_as = "measurement"
timezone = "Europe/Berlin"

[[rules]]
name = "fuzz-tasmota-text"
topic = "tic/+device/SENSOR"
format = "tasmota"
numeric_strings = true
convert = { BASE = "Wh->kWh", PAPP = 0.1 }

[[rules]]
name = "fuzz-shelly-components"
topic = "shc/+device/events/rpc"
format = "shelly_gen2"
components = ["em:0", "switch", "sys"]
convert = { total_act = "Wmin->kWh" }

[[rules]]
name = "fuzz-sign"
topic = "sign/+device"
format = "json"
fields = [{path = "power_a", sign = {path = "energy_flow_a", negative = ["producing", true, 1], positive = ["consuming"]}},
          {path = "p[0].v", optional = true, convert = 0.001, sign = {path = "p[0].d", negative = ["-"]}}]

[[rules]]
name = "fuzz-csv"
topic = "csv/+device"
format = "csv"
columns = ["t", "power", "", "state", "energy", "dir"]
fields = [{path = "power", optional = true, sign = {path = "dir", negative = ["export"]}},
          {path = "energy", optional = true, convert = "Wh->kWh"},
          {path = "state", name = "on", optional = true, map = {ON = 1, OFF = 0}}]
time_path = "t"
time_format = "epoch_s"
tag_paths = { d = "dir" }

[[rules]]
name = "fuzz-csv-all"
topic = "csvall/+device"
format = "csv"
delimiter = ";"
columns = ["a", "b", "c"]
measurement_path = "c"
scale = 0.1

[[rules]]
name = "fuzz-kv"
topic = "kv/+device"
format = "key_value"
include = ["*"]
exclude = ["fc", "e?"]
convert = { kn = "Wh->kWh" }

[[rules]]
name = "fuzz-kv-fields"
topic = "kvf/+device"
format = "key_value"
delimiter = "&"
assign = ":"
fields = ["pe", {path = "w1", optional = true}]
time_path = "ts"
"""

# Topics that reach each of the shipped example formats.
TOPICS = ["hack/m1/energy", "tele/plug1/SENSOR", "shellies/em1/emeter/0/power", "shelly1/status/em:0",
          "shelly1/events/rpc", "home/attic/temperature", "nothing/matches/this", "z2m/plug1", "all/dev1",
          "N/p/battery/512/Dc/0/Power", "N/p/battery/512/Soc", "dsmr/json", "tasm/meter/SENSOR",
          "tic/linky/SENSOR", "shc/pro3em/events/rpc", "sign/grid", "csv/emontx", "csvall/x", "kv/b2500",
          "kvf/relay"]
TEXT_TOPICS = ["csv/emontx", "csvall/x", "kv/b2500", "kvf/relay"]
KEYS = ["FeatureType", "device_id", "device_name", "device_type", "time", "Time", "ts", "Power", "EnergyIn",
        "ENERGY", "Total", "method", "params", "src", "id", "aenergy", "total", "forecast", "energy_flow", "",
        "a\nb", "#x", "time", "x y", "a,b", "a=b", "\\", "ü", "value", "power", "energy", "state", "ON", "meta",
        "type", "phase", "t", "list", "v", "x1", "timestamp", "SML", "Total_in", "agent", "1.5", "1e999", "nan",
        "NotifyStatus", "NotifyFullStatus", "NotifyEvent", "events", "em:0", "switch:1", "sys", "wifi", "uptime",
        "total_act", "TIC", "BASE", "007970903", "power_a", "energy_flow_a", "producing", "consuming", "p", "d",
        "-", "kn", "pe", "w1"]


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int = 1


MAX_PAYLOAD = 2048  # ingest.max_payload_bytes of these converters


def converter(tmp_path_factory) -> Converter:
    cfg = load_config(write_config(tmp_path_factory.mktemp("fuzz"), 1883, "http://127.0.0.1:8086", "x",
                                   extra=JSON_RULES))
    return Converter(Router(load_rules(cfg)), MAX_PAYLOAD)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                      st.integers().map(lambda i: i * 10**400), st.floats(allow_nan=True, allow_infinity=True),
                      st.text(max_size=20), st.sampled_from(KEYS))
json_doc = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                                                  max_size=6)), max_leaves=25)


def payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_doc.map(lambda d: json.dumps(d).encode()),
        st.integers(1, 1600).map(lambda n: b"[" * n),
        st.text(max_size=40).map(str.encode),
        st.floats().map(lambda f: repr(f).encode()),
    )


def one_outcome(out) -> bool:
    """A single message became points, or one dead letter, or one `ignored` note: exactly one of them."""
    return [out.points > 0, len(out.rejects) == 1, len(out.ignored) == 1].count(True) == 1 \
        and len(out.rejects) + len(out.ignored) <= 1


def assert_sane_output(out, n_messages: int) -> None:
    lines = out.body.split(b"\n")
    assert lines[-1] == b"" or not out.body
    lines = [ln for ln in lines if ln]
    assert len(lines) == out.points
    for line in lines:
        assert not re.search(rb"[\x00-\x1f\x7f]", line), line
        head = line_head(line)
        assert head is not None and head[1] is not None, line
        assert not head[0].startswith("#")
        assert head[0] not in RESERVED_MEASUREMENTS
    assert all(r["reason"] != "internal_error" for r in out.rejects), out.rejects
    assert len(out.rejects) + len(out.ignored) <= n_messages
    for entry in out.skipped:  # numbers sent as text, noted only for converted messages, bounded excerpts
        assert entry["skipped"] and all(len(text) <= 40 for _, text in entry["skipped"])


@FUZZ
@given(messages=st.lists(st.tuples(st.sampled_from(TOPICS), payloads()), min_size=1, max_size=8))
def test_converter_never_raises_and_writes_only_sane_lines(tmp_path_factory, messages):
    c = converter(tmp_path_factory)
    out = c.convert([Msg(t, p) for t, p in messages])
    assert_sane_output(out, len(messages))
    # each message is either converted or dead-lettered, alone: converting them one by one gives the same
    singles = [c.convert([Msg(t, p)], received_ns=0) for t, p in messages]
    assert sum(len(x.rejects) for x in singles) == len(out.rejects)
    assert sum(len(x.ignored) for x in singles) == len(out.ignored)
    assert sum(x.points for x in singles) == out.points
    assert all(one_outcome(x) for x in singles)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(KEYS), json_leaf, max_size=8),
       topic=st.sampled_from(TOPICS[:2]))
def test_seed_and_tasmota_objects(tmp_path_factory, doc, topic):
    """Objects shaped like the formats' own documents reach deeper into the parsers than random JSON."""
    if topic.startswith("tele/"):
        doc = {"Time": doc.pop("Time", "2023-01-01T00:00:00"), "ENERGY": doc}
    out = converter(tmp_path_factory).convert([Msg(topic, json.dumps(doc).encode())])
    assert_sane_output(out, 1)
    assert one_outcome(out), out


@FUZZ
@given(params=st.dictionaries(st.text(max_size=10), json_doc, max_size=4), ts=json_leaf)
def test_shelly_notify_status(tmp_path_factory, params, ts):
    doc = {"src": "shelly1", "method": "NotifyStatus", "params": {**params, "ts": ts}}
    out = converter(tmp_path_factory).convert([Msg("shelly1/events/rpc", json.dumps(doc).encode())])
    assert_sane_output(out, 1)
    assert one_outcome(out), out


@FUZZ
@given(method=st.one_of(st.sampled_from(["NotifyStatus", "NotifyFullStatus", "NotifyEvent", None]), json_leaf),
       params=st.one_of(st.dictionaries(st.sampled_from(KEYS + ["cloud", "input:0", "emdata:0", "em:1"]),
                                        json_doc, max_size=5), json_leaf),
       topic=st.sampled_from(["shelly1/events/rpc", "shc/pro3em/events/rpc", "shelly1/status/em:0",
                              "shelly1/status/sys"]))
def test_shelly_notifications_and_components(tmp_path_factory, method, params, topic):
    """NotifyStatus / NotifyFullStatus / NotifyEvent / anything, with and without a component filter."""
    doc = {"src": "shelly1", "params": params} if method is None else {"method": method, "params": params}
    payload = json.dumps(doc).encode()
    out = converter(tmp_path_factory).convert([Msg(topic, payload)])
    assert_sane_output(out, 1)
    assert one_outcome(out), out
    if method == "NotifyEvent" and topic.endswith("/rpc") and len(payload) <= MAX_PAYLOAD:
        assert len(out.ignored) == 1  # never a dead letter, whatever the event holds (within the size limit)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(KEYS), json_doc, max_size=6), magnitude=json_leaf,
       direction=st.one_of(json_leaf, st.sampled_from(["producing", "consuming", "-", "+"])))
def test_sign_from_another_field(tmp_path_factory, doc, magnitude, direction):
    doc.update(power_a=magnitude, energy_flow_a=direction)
    doc.setdefault("p", [{"v": magnitude, "d": direction}])
    out = converter(tmp_path_factory).convert([Msg("sign/grid", json.dumps(doc).encode())])
    assert_sane_output(out, 1)
    assert one_outcome(out), out
    if out.points and direction in ("producing", True, 1) and type(magnitude) is not bool:
        assert b"power_a=-" in out.body or b"power_a=0.0" in out.body


text_item = st.one_of(st.sampled_from(["", "1", "-2.5", "1e999", "nan", "ON", "OFF", "0:0", "007970903", " 3 ",
                                       "export", "import", "1709294400", "x\ny", "time", "a=b", "ü", "\x00"]),
                      st.text(max_size=8), st.floats(allow_nan=True).map(repr),
                      st.integers(-10**20, 10**20).map(str))


@FUZZ
@given(values=st.lists(text_item, max_size=12), keys=st.lists(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)),
                                                              max_size=12),
       glue=st.sampled_from([",", ";", "&", ":", "=", " ", "\n"]), topic=st.sampled_from(TEXT_TOPICS),
       pairs=st.booleans())
def test_text_formats(tmp_path_factory, values, keys, glue, topic, pairs):
    """csv and key_value on any text: records of numbers and words, pairs with any separators and names."""
    if pairs:
        text = glue.join(f"{k}{'=' if topic.startswith('kv/') else ':'}{v}" for k, v in zip(keys, values,
                                                                                          strict=False))
        if topic.startswith("kvf/"):
            text = text.replace(glue, "&")
    else:
        text = glue.join(values)
    out = converter(tmp_path_factory).convert([Msg(topic, text.encode("utf-8", "surrogatepass"))])
    assert_sane_output(out, 1)
    assert one_outcome(out), out


@FUZZ
@given(payload=st.binary(max_size=200), topic=st.sampled_from(TEXT_TOPICS))
def test_text_formats_on_any_bytes(tmp_path_factory, payload, topic):
    out = converter(tmp_path_factory).convert([Msg(topic, payload)])
    assert_sane_output(out, 1)
    assert one_outcome(out), out


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(KEYS), json_doc, max_size=8),
       meta=st.dictionaries(st.sampled_from(KEYS), json_doc, max_size=4),
       topic=st.sampled_from(["z2m/plug1", "all/dev1", "dsmr/json", "N/p/battery/512/Soc"]))
def test_json_rules(tmp_path_factory, doc, meta, topic):
    """Objects with the keys the json rules select (nested under `meta` too) reach every branch of the format."""
    if meta:
        doc["meta"] = meta
    out = converter(tmp_path_factory).convert([Msg(topic, json.dumps(doc).encode())])
    assert_sane_output(out, 1)
    assert one_outcome(out), out


@FUZZ
@given(text=st.one_of(st.text(max_size=12), st.from_regex(r"[+-]?[0-9]{0,4}\.?[0-9]{0,3}([eE][+-]?[0-9]{1,4})?",
                                                            fullmatch=True).map(lambda t: t + chr(0x1c))),
       leaf=st.sampled_from(["power", "x1"]))
def test_numbers_sent_as_text(tmp_path_factory, text, leaf):
    """Numeric strings (`numeric_strings`): a finite number or a reject, whatever the text (a selected field and a
    glob leaf)."""
    out = converter(tmp_path_factory).convert([Msg("z2m/plug1", json.dumps({leaf: text, "energy": 1}).encode())])
    assert_sane_output(out, 1)
    assert one_outcome(out), out


@FUZZ
@given(sensors=st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), json_doc, max_size=4),
       t=json_leaf, topic=st.sampled_from(["tele/plug1/SENSOR", "tasm/meter/SENSOR", "tic/linky/SENSOR"]))
def test_tasmota_sensor_objects(tmp_path_factory, sensors, t, topic):
    """Any sensor objects, any names (the name is a tag, or the measurement), any Time."""
    out = converter(tmp_path_factory).convert([Msg(topic, json.dumps({"Time": t, **sensors}).encode())])
    assert_sane_output(out, 1)
    assert one_outcome(out), out


level = st.one_of(st.sampled_from(["a", "b", "", "$SYS", "+", "#", "x y"]), st.text(max_size=3))
named_level = st.one_of(level, st.sampled_from(["+dev", "+measurement", "#rest", "+f=a|b", "+=b|$SYS",
                                                "#r=a|a/b|b/+", "#=b/a|x"]))


@FUZZ
@given(pattern=st.lists(named_level, min_size=1, max_size=4), topic=st.lists(level, min_size=1, max_size=5))
def test_topic_matcher_agrees_with_mqtt(pattern, topic):
    text = "/".join(pattern)
    try:
        p = TopicPattern.parse(text)
    except ValueError:
        return  # an invalid pattern is refused at config time
    topic_text = "/".join(topic)
    if "+" in topic_text or "#" in topic_text or not topic_text:
        return  # not a topic a broker delivers
    named = p.match(topic_text)
    assert (named is not None) == any(mqtt.topic_matches_sub(s, topic_text) for s in p.subscriptions), \
        (text, topic_text)
    if named is not None:
        parts = topic_text.split("/")
        for i, lv in enumerate(p.levels):
            if lv.startswith("+") and len(lv) > 1:
                assert named[lv[1:]] == parts[i]


@FUZZ
@given(st.binary(max_size=200))
def test_line_head_never_raises(data):
    head = line_head(data)
    assert head is None or isinstance(head[0], str)


names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@FUZZ
@given(measurement=names, tags=st.dictionaries(names, names, max_size=3),
       fields=st.dictionaries(names, st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(
           -2**63, 2**63 - 1), st.booleans(), names), min_size=1, max_size=3),
       t=st.integers(-2**63, 2**63 - 1))
def test_valid_points_give_one_line_with_their_head(measurement, tags, fields, t):
    p = Point(measurement, tags, fields, t)
    try:
        p.validate()
    except ValueError:
        return
    line = (p.to_line() + "\n").encode()
    assert line.count(b"\n") == 1
    assert line_head(line) == (measurement, t)
