"""The `json` format, the reworked `tasmota` format, topic value lists and conversions, through the agent's own
config loader and router (no broker, no database: the end-to-end runs are in test_devices.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import ConfigError, load_config
from edge_agent.ingest.formats import Reject
from edge_agent.ingest.formats.paths import Glob
from edge_agent.ingest.rules import Router, TopicPattern, load_rules
from tests.helpers.agent import ROOT

T = 1_700_000_000_000_000_000  # receive time


def router(tmp_path, rules: str) -> Router:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nstate_dir = "{tmp_path}"\n{rules}')
    return Router(load_rules(load_config(path)))


def config_error(tmp_path, rules: str) -> str:
    with pytest.raises(ConfigError) as info:
        router(tmp_path, rules)
    return str(info.value)


def route(r: Router, topic: str, doc, received_ns: int = T):
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return r.route(topic, payload, received_ns)[1]


def reject(r: Router, topic: str, doc) -> Reject:
    with pytest.raises(Reject) as info:
        route(r, topic, doc)
    return info.value


Z2M = """
[[rules]]
name = "plugs"
topic = "z2m/+device"
format = "json"
measurement = "plug"
fields = ["power", {path = "energy", name = "EnergyIn"}, {path = "state", name = "on", map = {ON = 1, OFF = 0}},
          {path = "voltage", optional = true}]
"""


def test_fields_by_path_with_rename_map_and_optional(tmp_path):
    r = router(tmp_path, Z2M)
    doc = {"state": "ON", "power": 41.7, "energy": 12.34, "linkquality": 156, "child_lock": "UNLOCK",
           "update": {"state": "idle", "installed_version": 192}}
    [p] = route(r, "z2m/washer", doc)
    assert (p.measurement, p.tags, p.time_ns) == ("plug", {"device": "washer"}, T)
    assert p.fields == {"power": 41.7, "EnergyIn": 12.34, "on": 1.0}  # no voltage (optional), no linkquality
    assert all(type(v) is float for v in p.fields.values())  # one field type per field in InfluxDB
    assert route(r, "z2m/washer", {**doc, "voltage": 231})[0].fields["voltage"] == 231.0


@pytest.mark.parametrize("doc, reason, where", [
    ({"power": "41.7", "energy": 1, "state": "ON"}, "wrong_type", "power"),  # a string where a number is selected
    ({"power": 1, "energy": 1, "state": "on"}, "wrong_type", "state"),  # not in the map
    ({"power": 1, "energy": 1, "state": True}, "wrong_type", "state"),
    ({"power": 1, "state": "ON"}, "missing_field", "energy"),
    ({"power": None, "energy": 1, "state": "ON"}, "missing_field", "power"),
    ({"power": 1e400, "energy": 1, "state": "ON"}, "not_finite", "power"),
    ([1, 2], "missing_field", "power"),
])
def test_selected_values_must_be_numbers(tmp_path, doc, reason, where):
    rej = reject(router(tmp_path, Z2M), "z2m/x", doc)
    assert rej.reason == reason and where in rej.detail and rej.rule == "plugs"


def test_numeric_strings_where_the_rule_says_so(tmp_path):
    r = router(tmp_path, Z2M.replace('measurement = "plug"', 'measurement = "plug"\nnumeric_strings = true'))
    [p] = route(r, "z2m/x", {"power": " 41.5", "energy": "-1.5e3", "state": "OFF"})
    assert p.fields == {"power": 41.5, "EnergyIn": -1500.0, "on": 0.0}
    for bad in ("nan", "inf", "1,5", "0x10", ""):
        assert reject(r, "z2m/x", {"power": bad, "energy": 1, "state": "ON"}).reason == "wrong_type", bad
    assert reject(r, "z2m/x", {"power": "1e999", "energy": 1, "state": "ON"}).reason == "not_finite"


def test_include_exclude_globs_flatten_nested_objects(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "dev/+device"
format = "json"
include = ["*"]
exclude = ["linkquality", "update.*", "*[1]"]
separator = "__"
""")
    doc = {"power": 5, "linkquality": 100, "state": "ON", "update": {"installed_version": 1},
           "aenergy": {"total": 1.5, "by_minute": [1, 2, 3]}, "list": [{"a": 1}], "flag": True, "none": None}
    [p] = route(r, "dev/x", doc)
    assert p.measurement == "mqtt"
    assert p.fields == {"power": 5.0, "aenergy__total": 1.5, "aenergy__by_minute__0": 1.0,
                        "aenergy__by_minute__2": 3.0, "list__0__a": 1.0}
    assert reject(r, "dev/x", {"state": "ON"}).reason == "missing_field"  # nothing numeric at all


def test_wildcard_paths_and_quoted_keys(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "dev/+device"
format = "json"
fields = ["params.*.apower", {path = 'obis["1.8.0"]', name = "EnergyIn"}, {path = "phases[*].p", optional = true}]
""")
    doc = {"params": {"switch:0": {"apower": 10}, "switch:1": {"apower": 20}, "sys": {}},
           "obis": {"1.8.0": 1234.5}, "phases": [{"p": 1}, {"p": 2}]}
    [p] = route(r, "dev/x", doc)
    assert p.fields == {"params_switch:0_apower": 10.0, "params_switch:1_apower": 20.0, "EnergyIn": 1234.5,
                        "phases_0_p": 1.0, "phases_1_p": 2.0}
    assert reject(r, "dev/x", {"obis": {"1.8.0": 1}}).reason == "missing_field"  # params.*.apower matches nothing


def test_measurement_tags_and_time_from_paths(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "dev/+device"
format = "json"
measurement_path = "type"
tag_paths = { phase = "meta.phase", serial = "meta.serial" }
time_path = "meta.t"
time_format = "%d.%m.%Y %H:%M:%S"
timezone = "Europe/Berlin"
include = ["values.*"]
""")
    doc = {"type": "meter", "meta": {"phase": "L1", "serial": 42, "t": "01.07.2023 14:00:00"}, "values": {"p": 1}}
    [p] = route(r, "dev/x", doc)
    assert p.measurement == "meter" and p.tags == {"device": "x", "phase": "L1", "serial": "42"}
    assert p.time_ns == int(datetime(2023, 7, 1, 12, 0, tzinfo=UTC).timestamp()) * 10**9  # CEST
    # missing tag: left out; missing time: receive time; a measurement path that is missing: rejected
    [p] = route(r, "dev/x", {"type": "meter", "values": {"p": 1}})
    assert p.tags == {"device": "x"} and p.time_ns == T
    assert reject(r, "dev/x", {"values": {"p": 1}}).reason == "missing_field"
    assert reject(r, "dev/x", {"type": 3, "values": {"p": 1}}).reason == "wrong_type"
    assert reject(r, "dev/x", {"type": "m", "meta": {"phase": 1.5}, "values": {"p": 1}}).reason == "wrong_type"
    assert reject(r, "dev/x", {"type": "m", "meta": {"t": "2023-07-01"}, "values": {"p": 1}}).reason \
        == "bad_timestamp"


@pytest.mark.parametrize("fmt, value, expected", [
    ("epoch_s", 1688212800, 1688212800 * 10**9),
    ("epoch_s", "1688212800.5", 1688212800_500_000_000),
    ("epoch_ms", 1688212800123, 1688212800_123_000_000),
    ("epoch_us", 1688212800123456, 1688212800_123_456_000),
    ("epoch_ns", 1688212800123456789, 1688212800_123_456_789),
    ("iso", "2023-07-01T12:00:00.25Z", 1688212800_250_000_000),
    ("iso", "2023-07-01T14:00:00", 1688212800 * 10**9),  # no offset: the rule's timezone (Europe/Berlin)
    ("auto", 1688212800123, 1688212800_123_000_000),  # magnitude says ms
])
def test_time_formats(tmp_path, fmt, value, expected):
    r = router(tmp_path, f"""
[[rules]]
topic = "dev/+device"
format = "json"
time_path = "t"
time_format = "{fmt}"
timezone = "Europe/Berlin"
""")
    assert route(r, "dev/x", {"t": value, "p": 1})[0].time_ns == expected


@pytest.mark.parametrize("fmt, value", [("epoch_s", "soon"), ("epoch_s", -5), ("epoch_s", 1e300), ("iso", 17e8),
                                        ("epoch_ms", True), ("epoch_ns", 2**70)])
def test_bad_times_are_rejected(tmp_path, fmt, value):
    r = router(tmp_path, f'[[rules]]\ntopic = "d/+x"\nformat = "json"\ntime_path = "t"\ntime_format = "{fmt}"\n')
    assert reject(r, "d/x", {"t": value, "p": 1}).reason == "bad_timestamp"


def test_victron_value_named_by_the_topic(tmp_path):
    """`{"value": …}` on N/<portal>/<service>/<instance>/<path>: the only field takes the topic's #field."""
    r = router(tmp_path, """
[[rules]]
topic = "N/+portal/+service=battery|system/+instance/#field=Dc/0/Power|Soc"
format = "json"
measurement = "victron"
fields = ["value"]
""")
    [p] = route(r, "N/c0619ab1cafe/battery/512/Dc/0/Power", {"value": -1250.4})
    assert p.fields == {"Dc/0/Power": -1250.4}
    assert p.tags == {"portal": "c0619ab1cafe", "service": "battery", "instance": "512"}
    assert reject(r, "N/c0619ab1cafe/battery/512/Soc", {"value": None}).reason == "missing_field"
    for topic in ("N/p/battery/512/ProductName", "N/p/vebus/276/Soc", "N/p/battery/512/Dc/0/Power/x"):
        assert reject(r, topic, {"value": 1}).reason == "unknown_topic", topic
    assert r.subscriptions == ["N/+/battery/+/Dc/0/Power", "N/+/battery/+/Soc", "N/+/system/+/Dc/0/Power",
                               "N/+/system/+/Soc"]


def test_topic_value_lists(tmp_path):
    p = TopicPattern.parse("evcc/site/+field=gridPower|pvPower")
    assert p.subscriptions == ["evcc/site/gridPower", "evcc/site/pvPower"]
    assert p.match("evcc/site/pvPower") == {"field": "pvPower"} and p.match("evcc/site/siteTitle") is None
    assert TopicPattern.parse("a/+=x|y/+b").subscriptions == ["a/x/+", "a/y/+"]
    for bad in ("a/+f=", "a/+f=x||y", "a/+f=x|+", "a/#f=x|#", "a/#f=x|y/+", "a/+f=" + "|".join(map(str, range(300)))):
        with pytest.raises(ValueError):
            TopicPattern.parse(bad)


def test_scale_applies_to_every_format(tmp_path):
    """`scale` ("multiply numeric values") was silently ignored by the tasmota and shelly_gen2 formats."""
    r = router(tmp_path, """
[[rules]]
topic = "tele/+device/SENSOR"
format = "tasmota"
scale = 0.001

[[rules]]
topic = "+device/status/+component"
format = "shelly_gen2"
scale = 0.001
""")
    assert route(r, "tele/plug/SENSOR", {"ENERGY": {"Total": 1500, "Power": 10}})[0].fields \
        == {"Total": 1.5, "Power": 0.01}
    assert route(r, "plus/status/switch:0", {"id": 0, "apower": 8500})[0].fields == {"apower": 8.5}


def test_conversions_by_field(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "tele/+device/SENSOR"
format = "tasmota"
scale = 2.0
convert = { Total = "kWh->Wh" }

[[rules]]
topic = "+device/status/+component"
format = "shelly_gen2"
convert = { aenergy_total = "Wh->kWh" }

[[rules]]
topic = "shellies/+device/relay/+channel/+field"
format = "shelly_gen1"
convert = { energy = "Wmin->kWh" }
""")
    [p] = route(r, "tele/plug/SENSOR", {"ENERGY": {"Total": 1.5, "Power": 10}})
    assert p.fields == {"Total": 3000.0, "Power": 20.0}
    [p] = route(r, "plus/status/switch:0", {"id": 0, "apower": 8.5, "aenergy": {"total": 1523.455}})
    assert p.fields == {"apower": 8.5, "aenergy_total": pytest.approx(1.523455)}
    [p] = route(r, "shellies/plug/relay/0/energy", b"6000")
    assert p.fields == {"energy": pytest.approx(0.1)}


def test_tasmota_every_sensor_object_becomes_a_point(tmp_path):
    """Issue 15: an SML meter reader's object (not ENERGY) was rejected as missing_field."""
    r = router(tmp_path, '[[rules]]\ntopic = "tele/+device/SENSOR"\nformat = "tasmota"\ntimezone = "Europe/Berlin"\n')
    doc = {"Time": "2024-03-01T12:00:00", "SML": {"Total_in": 12345.678, "Total_out": 2345.678, "Power_curr": -512},
           "DS18B20": {"Id": "01143A2D0BAA", "Temperature": 21.5}, "TempUnit": "C"}
    sml, ds = route(r, "tele/meter/SENSOR", doc)
    assert (sml.measurement, sml.tags) == ("tasmota", {"device": "meter", "sensor": "SML"})
    assert sml.fields == {"Total_in": 12345.678, "Total_out": 2345.678, "Power_curr": -512.0}
    assert sml.time_ns == int(datetime(2024, 3, 1, 11, 0, tzinfo=UTC).timestamp()) * 10**9  # CET
    assert ds.tags["sensor"] == "DS18B20" and ds.fields == {"Temperature": 21.5}


def test_tasmota_sensor_as_measurement(tmp_path):
    doc = {"Time": "2024-03-01T12:00:00", "SML": {"Total_in": 1.5}, "DS18B20": {"Temperature": 21.5}}
    r = router(tmp_path, '[[rules]]\ntopic = "tele/+device/SENSOR"\nformat = "tasmota"\nsensor_as = "measurement"\n')
    assert [p.measurement for p in route(r, "tele/meter/SENSOR", doc)] == ["SML", "DS18B20"]
    assert reject(r, "tele/meter/SENSOR", {"Time": "2024-03-01T12:00:00", "Switch1": "ON"}).reason \
        == "missing_field"


def test_names_from_payload_keys_are_validated(tmp_path):
    r = router(tmp_path, '[[rules]]\ntopic = "d/+x"\nformat = "json"\ntag_paths = { t = "t" }\nmeasurement_path = "m"\n')
    for doc in ({"m": "#x", "p": 1}, {"m": "a\nb", "p": 1}, {"p\n": 1, "m": "x"}, {"m": "x", "t": "a\\", "p": 1}):
        assert reject(r, "d/x", doc).reason == "invalid_name", doc
    assert reject(r, "d/x", {"m": "forecast", "p": 1}).reason == "reserved_measurement"


@pytest.mark.parametrize("rules, message", [
    ('format = "json"\nfields = ["a..b"]', "rules[0].fields[0].path: path 'a..b': empty key"),
    ('format = "json"\nfields = [{path = "a", unit = "W"}]', "rules[0].fields[0]: unknown key(s) unit"),
    ('format = "json"\nfields = [{path = "a[x]"}]', "rules[0].fields[0].path"),
    ('format = "json"\nfields = [{path = "a.*", name = "b"}]', "rules[0].fields[0].name"),
    ('format = "json"\nfields = ["a", {path = "b", name = "a"}]', "rules[0].fields: field name(s) a selected twice"),
    ('format = "json"\nfields = [{path = "a", map = {ON = "1"}}]', "rules[0].fields[0].map"),
    ('format = "json"\nfields = [{path = "a", convert = "Wh->W"}]', "rules[0].fields[0].convert: cannot convert"),
    ('format = "json"\nmeasurement_path = "a.*"', "rules[0].measurement_path"),
    ('format = "json"\ntag_paths = { time = "a" }', "rules[0].tag_paths.time"),
    ('format = "json"\ntime_format = "unix"', "rules[0].time_format"),
    ('format = "json"\ninclude = [""]', "rules[0].include"),
    ('format = "json"\nfields = ["a"]\nexclude = ["b"]', "rules[0].exclude"),
    ('format = "json"\nseparator = "\\n"', "rules[0].separator"),
    ('format = "seed_json"\ninclude = ["*"]', "rules[0].include: only for format csv, json or key_value"),
    ('format = "json"\nsensor_as = "measurement"', "rules[0].sensor_as: only for format tasmota"),
    ('format = "tasmota"\nsensor_as = "object"', "rules[0].sensor_as"),
    ('format = "tasmota"\nsensor_as = "measurement"\nmeasurement = "x"', "rules[0].measurement"),
    ('format = "json"\nconvert = { a = "kWh->kW" }', "rules[0].convert.a: cannot convert energy"),
    ('format = "json"\nconvert = { a = "Wh" }', "rules[0].convert.a"),
    ('format = "json"\ntimezone = "Europe/Berln"', "rules[0].timezone 'Europe/Berln' is not a known IANA timezone"),
    ('format = "json"\nscale = 0', "rules[0].scale"),
])
def test_config_errors_name_the_key(tmp_path, rules, message):
    assert message in config_error(tmp_path, f'[[rules]]\ntopic = "d/+x"\n{rules}\n')


def test_a_mistyped_timezone_is_a_config_error_not_an_error_per_message(tmp_path):
    """It used to pass `edge-agent check` and then dead-letter every message as internal_error."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[[rules]]\ntopic = "tele/+device/SENSOR"\nformat = "tasmota"\ntimezone = "Europe/Berln"\n')
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--offline", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "rules[0].timezone 'Europe/Berln'" in r.stderr


def test_the_formats_come_from_one_registry(tmp_path, monkeypatch):
    """Issue 27 item 1: a format is added in one place (the formats registry), not also in the config's list; the
    rules are compiled once, by their owner (`load_rules`), not also by load_config."""
    from edge_agent.ingest import rules
    from edge_agent.ingest.formats import FORMATS, Format

    error = config_error(tmp_path, '[[rules]]\ntopic = "a/+device"\nformat = "nope"')
    assert f"one of {', '.join(FORMATS)}" in error and "rules[0]" in error and str(tmp_path) in error
    monkeypatch.setitem(FORMATS, "nope", Format(FORMATS["number"].compile))  # registered: a rule may use it
    r = router(tmp_path, '[[rules]]\ntopic = "a/+device"\nformat = "nope"\nmeasurement = "m"\nfield = "v"')
    assert route(r, "a/x", b"1.5")[0].fields == {"v": 1.5}

    compiled = []
    monkeypatch.setattr(rules, "compile_rule", lambda *a: compiled.append(a) or rules.Rule(None, None, None))
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nstate_dir = "{tmp_path}"\n[[rules]]\ntopic = "a/+device"\nformat = "json"\n')
    cfg = load_config(path)
    assert compiled == []  # loading the configuration compiles nothing …
    rules.load_rules(cfg)
    assert len(compiled) == 1  # … its owner compiles each rule once


@pytest.mark.timeout(30)  # the backtracking regex took over 120 s on this message
def test_globs_with_many_stars_match_a_hostile_key_in_linear_time(tmp_path):
    """Issue 23, item 5: `*_*_*_total` compiled to `.*_.*_.*_total` backtracked cubically on one long key."""
    r = router(tmp_path, """
[[rules]]
topic = "dev/+device"
format = "json"
include = ["*_*_*_total", "e?ergy*"]
exclude = ["*x*x*x*x*y"]
""")
    hostile = "a_" * 30_000  # a 60 KB key of underscores that never ends in _total
    doc = {hostile: 1, "phase_a_import_total": 2.5, "energy": 3, "x_x_x_x_total": 4, "xxxxy": 5}
    [p] = route(r, "dev/x", doc)
    assert p.fields == {"phase_a_import_total": 2.5, "energy": 3.0, "x_x_x_x_total": 4.0}


@settings(max_examples=3000, deadline=None)
@given(pattern=st.text("ab_*?", min_size=1, max_size=7), text=st.text("ab_.", max_size=10))
def test_globs_match_as_fnmatch_would(pattern, text):
    """The linear matcher agrees with the plain translation (`*` any run, `?` one character, the rest literal)."""
    reference = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
                           re.DOTALL)
    assert Glob(pattern).fullmatch(text) == (reference.fullmatch(text) is not None)


@pytest.mark.parametrize("section, key", [
    ("[ingest]\nmax_series_per_rule = -1", "[ingest].max_series_per_rule must be 0 (no bound) or more, not -1"),
    ("[ingest]\nmax_payload_bytes = 65536\nqueue_max_bytes = 1000", "[ingest].queue_max_bytes"),
    ("[ingest]\ndeadletter_keep = 0", "[ingest].deadletter_keep must be at least 1, not 0"),
    ("[mqtt]\nqos = 3", "[mqtt].qos must be 0, 1 or 2, not 3"),
    ("[mqtt]\nread_coalesce_s = 2", "[mqtt].read_coalesce_s must be between 0 and 1 (seconds), not 2.0"),
    ("[spool]\ncommit_interval_s = 301", "[spool].commit_interval_s must be between 0 and 300 (seconds)"),
    ("[spool]\ncommit_max_messages = 0", "[spool].commit_max_messages must be at least 1"),
    ('[mqtt]\nsubscribe = ["a/#", 1]', "[mqtt].subscribe: expected list[str]"),
    ('[retention]\nkeep_policy = "a b"', "[retention].keep_policy 'a b': letters, digits"),
    ('[storage]\nretention_policy = "keep"\n[retention]', "[retention].keep_policy must differ"),
])
def test_bounds_are_checked_with_the_key_named(tmp_path, section, key):
    """The ranges sit on the fields (shared/config.py `setting`): one validator for the agent and the server."""
    error = config_error(tmp_path, f'{section}\n[[rules]]\ntopic = "a/+x"\nformat = "number"\n'
                                   'measurement = "m"\nfield = "v"')
    assert key in error and str(tmp_path) in error


def test_where_what_lasts_is_written_follows_retention(tmp_path):
    """The keep policy is routed by the configuration (no component needed): on with [retention], off without it
    or with enabled = false."""
    def keep(extra: str):
        path = tmp_path / "agent.toml"
        path.write_text(f'[agent]\nstate_dir = "{tmp_path}"\n{extra}\n[[rules]]\ntopic = "a"\nformat = "json"\n')
        return load_config(path).storage.keep_policy

    assert keep("") is None
    assert keep("[retention]") == "keep"
    assert keep('[retention]\nkeep_policy = "years"') == "years"
    assert keep("[retention]\nenabled = false") is None


@pytest.mark.parametrize("section, key", [
    ("mqtt:\n  qos: null", "[mqtt].qos: expected int, got None"),
    ("ingest:\n  queue_max_bytes: ~", "[ingest].queue_max_bytes: expected int, got None"),
    ("spool:\n  commit_interval_s: null", "[spool].commit_interval_s: expected float, got None"),
])
def test_a_yaml_null_is_refused_with_the_key_named(tmp_path, section, key):
    """YAML can say null where TOML cannot: a setting without `| None` in its type refuses it (the range checks on
    the fields skipped it; `qos: null` passed `edge-agent check` and a null queue bound raised a TypeError)."""
    path = tmp_path / "agent.yaml"
    path.write_text(f"agent:\n  state_dir: {tmp_path}\n{section}\n"
                    "rules:\n  - {topic: a/+x, format: number, measurement: m, field: v}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert key in str(info.value) and str(path) in str(info.value)
    path.write_text(f"agent:\n  state_dir: {tmp_path}\nmqtt:\n  ca_file: null\n"  # `str | None`: null is its default
                    "rules:\n  - {topic: a/+x, format: number, measurement: m, field: v}\n")
    assert load_config(path).mqtt.ca_file is None
