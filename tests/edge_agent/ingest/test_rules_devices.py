"""Issue 23's device items through the agent's own config loader and router (no broker, no database: the end-to-end
runs with the shipped example rules are in test_devices.py, the topic layouts in test_topic_layouts.py):
text formats, exact decimals, a sign from another field, Shelly notifications and the component filter, numbers
sent as text, and the path and topic forms that worked but were not written down."""

from __future__ import annotations

from decimal import Context, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.ingest.formats import Ignored
from edge_agent.ingest.formats.units import exact_factor, scaler
from tests.edge_agent.ingest.test_rules_json import config_error, reject, route, router

T = 1_700_000_000_000_000_000


def ignored(r, topic: str, doc) -> Ignored:
    with pytest.raises(Ignored) as info:
        route(r, topic, doc)
    return info.value


# -- text formats -----------------------------------------------------------------------------------------------
EMONHUB = """
[[rules]]
name = "emontx"
topic = "emonhub/rx/+node/values"
format = "csv"
measurement = "emonhub"
columns = ["power1", "power2", "power3", "power4", "vrms", "temp1", "", "", "", "", "", "pulse"]
"""


def test_csv_columns_named_by_the_rule(tmp_path):
    """emonhub's legacy node topic: a record of numbers, the names in emonhub.conf (`names = power1, …`)."""
    r = router(tmp_path, EMONHUB)
    [p] = route(r, "emonhub/rx/8/values", b"252,0,18,0,241.95,18.6,300,300,300,300,300,1234")
    assert (p.measurement, p.tags, p.time_ns) == ("emonhub", {"node": "8"}, T)
    assert p.fields == {"power1": 252.0, "power2": 0.0, "power3": 18.0, "power4": 0.0, "vrms": 241.95,
                        "temp1": 18.6, "pulse": 1234.0}
    assert all(type(v) is float for v in p.fields.values())
    # fewer values: the rest is missing; more: not read; an empty value is missing; spaces around are fine
    assert route(r, "emonhub/rx/8/values", b"1.5, 2")[0].fields == {"power1": 1.5, "power2": 2.0}
    assert route(r, "emonhub/rx/8/values", b",7,,,,,,,,,,9,10,11\n")[0].fields == {"power2": 7.0, "pulse": 9.0}
    # text that is not a number is no measurement (like a JSON string); nothing numeric at all is refused
    assert route(r, "emonhub/rx/8/values", b"x,5")[0].fields == {"power2": 5.0}
    assert reject(r, "emonhub/rx/8/values", b"").reason == "missing_field"
    assert reject(r, "emonhub/rx/8/values", b"nan,inf").reason == "missing_field"
    assert reject(r, "emonhub/rx/8/values", b"1e999").reason == "not_finite"
    assert reject(r, "emonhub/rx/8/values", b"\xff,1").reason == "not_utf8"


def test_csv_with_fields_map_delimiter_and_time(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "bridge/+device"
format = "csv"
delimiter = ";"
columns = ["t", "state", "power", "energy"]
fields = ["power", {path = "energy", convert = "Wh->kWh"}, {path = "state", name = "on", map = {ON = 1, OFF = 0}}]
time_path = "t"
time_format = "epoch_s"
""")
    [p] = route(r, "bridge/a", b"1709290800;ON;41.5;131881.85")
    assert p.fields == {"power": 41.5, "energy": 131.88185, "on": 1.0} and p.time_ns == 1709290800 * 10**9
    rej = reject(r, "bridge/a", b"1709290800;ON;n/a;1")
    assert rej.reason == "wrong_type" and "power" in rej.detail
    assert reject(r, "bridge/a", b"1709290800;ON;1").reason == "missing_field"


B2500 = """
[[rules]]
name = "b2500"
topic = "hame_energy/+type/device/+mac/ctrl"
format = "key_value"
measurement = "b2500"
fields = [{ path = "pe", name = "soc" }, { path = "w1", name = "pv1_power" }, { path = "w2", name = "pv2_power" },
          { path = "g1", name = "out1_power" }, { path = "g2", name = "out2_power" },
          { path = "kn", name = "remaining_wh", optional = true }]
"""
B2500_CTRL = (b"p1=1,p2=1,w1=233,w2=0,pe=78,vv=224,sv=9,cs=0,cd=0,am=0,o1=1,o2=1,do=90,lv=800,cj=1,kn=1800,g1=110,"
              b"g2=108,b1=0,b2=0,md=0,d1=1,e1=0:0,f1=23:59,h1=800,sg=0,sp=80,st=0,tl=12,th=13,tc=0,tf=0,"
              b"fc=202310231502,id=5,a0=78,bc=520,bs=330,pt=1250,it=480")


def test_key_value_lists(tmp_path):
    """A Marstek/Hame B2500 battery's ctrl message: what the rule names is stored, times such as e1=0:0 are not
    numbers and were not asked for."""
    r = router(tmp_path, B2500)
    [p] = route(r, "hame_energy/HMA-1/device/60323bd14b6e/ctrl", B2500_CTRL)
    assert p.measurement == "b2500" and p.tags == {"type": "HMA-1", "mac": "60323bd14b6e"}
    assert p.fields == {"soc": 78.0, "pv1_power": 233.0, "pv2_power": 0.0, "out1_power": 110.0,
                        "out2_power": 108.0, "remaining_wh": 1800.0}
    assert reject(r, "hame_energy/HMA-1/device/x/ctrl", b"pe=78,w1=1,w2=2,g1=3").reason == "missing_field"
    rej = reject(r, "hame_energy/HMA-1/device/x/ctrl", b"pe=78,online,w1=1")
    assert rej.reason == "wrong_type" and "'online' is not key=value" in rej.detail
    everything = router(tmp_path, """
[[rules]]
topic = "relay/+device"
format = "key_value"
delimiter = ";"
assign = ":"
""")
    [p] = route(everything, "relay/r1", b" soc : 87 ; power:-1250.5;;mode:auto; soc:88 ;fw: ; 1.8.0:131881.85")
    assert p.fields == {"soc": 88.0, "power": -1250.5, "1.8.0": 131881.85}  # the last soc; fw has no value
    assert p.measurement == "mqtt"
    assert reject(everything, "relay/r1", b"time:5").reason == "invalid_name"
    assert reject(everything, "relay/r1", b":5").reason == "wrong_type"


@pytest.mark.parametrize("rules, message", [
    ('format = "csv"', "rules[0].columns: needs the column names"),
    ('format = "csv"\ncolumns = ["", ""]', "rules[0].columns: names no column"),
    ('format = "csv"\ncolumns = ["a", "a"]', "rules[0].columns: a named twice"),
    ('format = "csv"\ncolumns = ["a\\nb"]', "rules[0].columns[0]: column name"),
    ('format = "csv"\ncolumns = ["a"]\ndelimiter = ""', "rules[0].delimiter"),
    ('format = "csv"\ncolumns = ["a"]\nnumeric_strings = true', "rules[0].numeric_strings: only for format json or "
                                                               "tasmota"),
    ('format = "json"\ncolumns = ["a"]', "rules[0].columns: only for format csv"),
    ('format = "key_value"\nassign = ","', "rules[0].assign: ',' and the delimiter ','"),
    ('format = "json"\nassign = ":"', "rules[0].assign: only for format key_value"),
    ('format = "json"\ndelimiter = ";"', "rules[0].delimiter: only for format csv or key_value"),
    ('format = "json"\nfields = [{path = "p", sign = "producing"}]', "rules[0].fields[0].sign: must be a table"),
    ('format = "json"\nfields = [{path = "p", sign = {path = "d"}}]', "rules[0].fields[0].sign: needs `path`"),
    ('format = "json"\nfields = [{path = "p", sign = {path = "d", negative = []}}]', "rules[0].fields[0].sign.negative"),
    ('format = "json"\nfields = [{path = "p", sign = {path = "d", negative = ["a"], up = ["b"]}}]',
     "rules[0].fields[0].sign: unknown key(s) up"),
    ('format = "json"\nfields = [{path = "p", sign = {path = "d", negative = ["a"], positive = ["a"]}}]',
     "rules[0].fields[0].sign.positive: a also listed as negative"),
    ('format = "json"\nfields = [{path = "p.*", sign = {path = "d", negative = ["a"]}}]', "rules[0].fields[0].sign"),
    ('format = "json"\nfields = [{path = "p", sign = {path = "d..", negative = ["a"]}}]',
     "rules[0].fields[0].sign.path"),
    ('format = "shelly_gen2"\ncomponents = "em:0"', "rules[0].components: expected list"),
    ('format = "shelly_gen2"\ncomponents = ["em:0", ""]', "rules[0].components[1]"),
    ('format = "json"\ncomponents = ["em:0"]', "rules[0].components: only for format shelly_gen2"),
    ('format = "tasmota"\nnumeric_strings = 1', "rules[0].numeric_strings: expected bool"),
    ('format = "json"\nconvert = { a = 0 }', "rules[0].convert.a: a factor must be a finite non-zero number"),
])
def test_new_keys_name_the_key_in_errors(tmp_path, rules, message):
    assert message in config_error(tmp_path, f'[[rules]]\ntopic = "d/+x"\n{rules}\n')


# -- exact decimals ---------------------------------------------------------------------------------------------
def test_conversions_store_the_decimal_the_device_means(tmp_path):
    """131881.85 Wh was stored as 131.88185000000001 kWh and 7 × 0.1 as 0.7000000000000001 (a float multiply)."""
    assert 131881.85 * 0.001 != 131.88185 and 7 * 0.1 != 0.7  # what the multiply gave (so this test can fail)
    r = router(tmp_path, """
[[rules]]
topic = "m/+device"
format = "json"
fields = [{path = "e", convert = "Wh->kWh"}, {path = "f", convert = 0.1}, "g", "h", "w"]
convert = { g = "Wh->kWh", h = 0.1, w = "Wmin->kWh" }

[[rules]]
topic = "s/+device"
format = "json"
scale = 0.1
convert = { e = "Wh->kWh" }
""")
    [p] = route(r, "m/x", {"e": 131881.85, "f": 7, "g": 131881.85, "h": 53, "w": 6543})
    assert p.fields == {"e": 131.88185, "f": 0.7, "g": 131.88185, "h": 5.3, "w": 0.10905}
    assert repr(p.fields["e"]) == "131.88185" and repr(p.fields["h"]) == "5.3"
    # scale and a conversion compose into one exact factor (0.1 × 1/1000), not two roundings
    [p] = route(r, "s/x", {"e": 1318818.5, "p": 7})
    assert p.fields == {"e": 131.88185, "p": 0.7}
    assert "131.88185" in p.to_line() and "0.7" in p.to_line()


decimals = st.builds(lambda digits, point, neg: ("-" if neg else "") + (digits[:point] or "0") + "." + digits[point:]
                     if point < len(digits) else ("-" if neg else "") + digits,
                     st.text("0123456789", min_size=1, max_size=15), st.integers(0, 15), st.booleans())


@settings(max_examples=500, deadline=None)
@given(text=decimals, k=st.integers(-9, 9))
def test_powers_of_ten_shift_the_decimal(text, k):
    """x × 10**k is the double nearest to the decimal x means, shifted: a reading compares equal to what the
    device shows, whatever the unit."""
    x = float(text)
    f = scaler(Fraction(10) ** k)
    got = f(x) if f else x
    assert got == float(Decimal(text).scaleb(k))
    if k < 0:  # and so the division by the power of ten gives the same (where a multiply is off by an ulp)
        assert got == float(Fraction(text) / 10**-k)


@settings(max_examples=500, deadline=None)
@given(text=decimals, factor=st.one_of(
    st.sampled_from(["0.1", "2.5", "0.0036", "1.25e-7", "-0.5", "Wmin->kWh", "Ws->Wh", "kJ->Wh", "J->kWh",
                     "Wh->MWh", "mA->A", "kvar->var"]),
    st.floats(min_value=1e-6, max_value=1e6).map(repr)))
def test_any_factor_rounds_once_from_the_exact_product(text, factor):
    spec = float(factor) if factor[0].isdigit() or factor[0] == "-" else factor
    exact = exact_factor(spec, "f")
    if isinstance(spec, float):
        assert exact == Fraction(factor)  # the factor is the decimal written, not its binary double
    f = scaler(exact)
    got = f(float(text)) if f else float(text)
    assert got == float(Fraction(text) * exact)
    if exact.denominator % 3 and exact.denominator % 7:  # terminating: the decimal product, computed exactly
        assert got == float(Context(prec=80).multiply(Decimal(text), Decimal(exact.numerator) / exact.denominator))


def test_scaling_keeps_overflow_and_non_finite_as_they_were():
    assert scaler(Fraction(10**300))(1e300) == float("inf")
    assert scaler(Fraction(1, 60))(float("-inf")) == float("-inf")
    assert scaler(Fraction(5, 2))(1e308) == float("inf")
    assert scaler(Fraction(1)) is None


# -- a sign from another field ----------------------------------------------------------------------------------
PJ1203A = """
[[rules]]
topic = "zigbee2mqtt/meter/+device"
format = "json"
measurement = "zigbee_meter"
fields = [
  { path = "power_a", sign = { path = "energy_flow_a", negative = ["producing"], positive = ["consuming"] } },
  { path = "power_b", optional = true, sign = { path = "energy_flow_b", negative = ["producing"] } },
]
"""


def test_sign_from_another_field(tmp_path):
    r = router(tmp_path, PJ1203A)
    doc = {"power_a": 130.8, "energy_flow_a": "producing", "power_b": 455.2, "energy_flow_b": "consuming"}
    assert route(r, "zigbee2mqtt/meter/grid", doc)[0].fields == {"power_a": -130.8, "power_b": 455.2}
    doc.update(energy_flow_a="consuming", energy_flow_b="anything but producing")
    assert route(r, "zigbee2mqtt/meter/grid", doc)[0].fields == {"power_a": 130.8, "power_b": 455.2}
    # a signed magnitude is not negated twice
    assert route(r, "zigbee2mqtt/meter/grid", {"power_a": -130.8, "energy_flow_a": "producing"})[0].fields \
        == {"power_a": -130.8}
    rej = reject(r, "zigbee2mqtt/meter/grid", {"power_a": 1, "energy_flow_a": "idle"})
    assert rej.reason == "wrong_type" and "energy_flow_a (the sign of power_a) is 'idle'" in rej.detail
    assert reject(r, "zigbee2mqtt/meter/grid", {"power_a": 1, "energy_flow_a": 3.5}).reason == "wrong_type"
    rej = reject(r, "zigbee2mqtt/meter/grid", {"power_a": 1})
    assert rej.reason == "missing_field" and "energy_flow_a" in rej.detail
    # an optional field whose direction is missing is left out, like a missing value
    assert route(r, "zigbee2mqtt/meter/grid", {"power_a": 1, "energy_flow_a": "consuming", "power_b": 5})[0].fields \
        == {"power_a": 1.0}


def test_sign_values_may_be_booleans_or_integers(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "d/+x"
format = "json"
fields = [{ path = "p", sign = { path = "export", negative = [true] } },
          { path = "q", sign = { path = "dir", negative = [1], positive = [0] } }]
""")
    assert route(r, "d/x", {"p": 5, "export": True, "q": 2, "dir": 1})[0].fields == {"p": -5.0, "q": -2.0}
    assert route(r, "d/x", {"p": 5, "export": False, "q": 2, "dir": 0})[0].fields == {"p": 5.0, "q": 2.0}
    assert reject(r, "d/x", {"p": 5, "export": False, "q": 2, "dir": 2}).reason == "wrong_type"


# -- Shelly gen2+ notifications ---------------------------------------------------------------------------------
SHELLY = """
[[rules]]
name = "notify"
topic = "+device/events/rpc"
format = "shelly_gen2"
convert = { total_act = "Wh->kWh" }

[[rules]]
name = "status"
topic = "+device/status/+component"
format = "shelly_gen2"
"""
PRO3EM = "shellypro3em-c8f09e8a1b2c"
FULL_STATUS = {
    "src": PRO3EM, "dst": f"{PRO3EM}/events", "method": "NotifyFullStatus",
    "params": {"ts": 1709294400.52,
               "ble": {}, "cloud": {"connected": True}, "mqtt": {"connected": True},
               "em:0": {"id": 0, "a_act_power": 250.5, "b_act_power": 100.2, "c_act_power": 180.0,
                        "total_act_power": 530.7, "user_calibrated_phase": []},
               "emdata:0": {"id": 0, "a_total_act_energy": 10000.5, "total_act": 131881.85, "total_act_ret": 5.5},
               "eth": {"ip": None}, "modbus": {},
               "sys": {"mac": "C8F09E8A1B2C", "restart_required": False, "time": "12:00", "unixtime": 1709294400,
                       "uptime": 86400, "ram_size": 246880, "ram_free": 113296, "fs_size": 524288,
                       "fs_free": 180224, "cfg_rev": 12, "kvs_rev": 0, "schedule_rev": 0, "webhook_rev": 0,
                       "available_updates": {}},
               "temperature:0": {"id": 0, "tC": 41.2, "tF": 106.2},
               "wifi": {"sta_ip": "192.168.1.40", "status": "got ip", "ssid": "home", "rssi": -58},
               "ws": {"connected": False}}}
# The Pro 3EM's minute record (EMData `data` event): unnamed numbers, the energy itself is in emdata:0's status
NOTIFY_EVENT = {"src": PRO3EM, "dst": f"{PRO3EM}/events", "method": "NotifyEvent",
                "params": {"ts": 1709294460.0, "events": [
                    {"component": "emdata:0", "id": 0, "event": "data", "ts": 1709294400.0,
                     "data": {"ts": 1709294400, "period": 60,
                              "values": [[0.4, 0.0, 231.2, 230.1, 1.2, 0.0, 231.9, 229.4, 0.6]]}}]}}


def test_notify_full_status_keeps_the_energy_and_drops_the_housekeeping(tmp_path):
    points = route(router(tmp_path, SHELLY), f"{PRO3EM}/events/rpc", FULL_STATUS)
    assert {p.tags["component"]: p.fields for p in points} == {
        "em:0": {"a_act_power": 250.5, "b_act_power": 100.2, "c_act_power": 180.0, "total_act_power": 530.7},
        "emdata:0": {"a_total_act_energy": 10000.5, "total_act": 131.88185, "total_act_ret": 5.5},
        "temperature:0": {"tC": 41.2, "tF": 106.2}}
    assert all(p.time_ns == 1709294400_520_000_000 and p.tags["device"] == PRO3EM for p in points)


def test_notify_event_and_status_without_numbers_are_ignored_not_dead_lettered(tmp_path):
    r = router(tmp_path, SHELLY)
    assert "emdata:0 data" in ignored(r, f"{PRO3EM}/events/rpc", NOTIFY_EVENT).detail
    button = {"src": "shellyplus1-a8032ab12345", "method": "NotifyEvent",
              "params": {"ts": 1709294400.1, "events": [{"component": "input:0", "id": 0, "event": "single_push",
                                                         "ts": 1709294400.1}]}}
    assert ignored(r, "shellyplus1/events/rpc", button).rule == "notify"
    for params in ({"cloud": {"connected": False}}, {"input:0": {"id": 0, "state": True}},
                   {"sys": {"uptime": 5, "ram_free": 3}}, {"wifi": {"rssi": -70}}, {}):
        doc = {"src": "shellyplus1", "method": "NotifyStatus", "params": {"ts": 1709294400.1, **params}}
        assert "without values" in ignored(r, "shellyplus1/events/rpc", doc).detail
    # what is not normal is still refused
    assert reject(r, "x/events/rpc", {"method": "NotifyStatus"}).reason == "missing_field"
    assert reject(r, "x/events/rpc", {"method": "Shelly.Reboot", "params": {}}).reason == "wrong_type"
    assert reject(r, "x/events/rpc", {"method": "NotifyStatus", "params": {"ts": "soon"}}).reason == "bad_timestamp"
    assert ignored(r, "x/status/sys", {"uptime": 5}).rule == "status"  # housekeeping on a status topic


def test_component_filter(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "+device/events/rpc"
format = "shelly_gen2"
components = ["emdata:0", "switch", "wifi"]

[[rules]]
topic = "+device/status/+component"
format = "shelly_gen2"
components = ["switch"]
""")
    doc = {"src": "s", "method": "NotifyStatus",
           "params": {"ts": 1709294400, "switch:0": {"id": 0, "apower": 5}, "switch:1": {"id": 1, "apower": 6},
                      "emdata:0": {"total_act": 7}, "emdata:1": {"total_act": 8}, "em:0": {"total_act_power": 9},
                      "wifi": {"rssi": -58}}}
    assert {p.tags["component"]: p.fields for p in route(r, "s/events/rpc", doc)} == {
        "switch:0": {"apower": 5.0}, "switch:1": {"apower": 6.0}, "emdata:0": {"total_act": 7.0},
        "wifi": {"rssi": -58.0}}  # listed: housekeeping is stored when a rule asks for it
    assert route(r, "s/status/switch:3", {"id": 3, "apower": 1})[0].tags["component"] == "switch:3"
    assert "not in the rule's components" in ignored(r, "s/status/em:0", {"id": 0, "total_act_power": 1}).detail


# -- numbers sent as text ---------------------------------------------------------------------------------------
TIC = {"Time": "2024-03-01T12:00:00",
       "ENERGY": {"TotalStartTime": "2023-01-01T00:00:00", "Total": 7970.903, "Power": 270},
       "TIC": {"ADCO": "031762120162", "OPTARIF": "BASE", "ISOUSC": "30", "BASE": "007970903", "PTEC": "TH..",
               "IINST": "001", "IMAX": "090", "PAPP": "00270", "HHPHC": "A", "MOTDETAT": "000000"}}


def test_tasmota_numbers_sent_as_text_are_stored_or_reported(tmp_path):
    """Tasmota's Teleinfo (Linky) counter `"BASE":"007970903"` was dropped without a dead letter or a counter."""
    r = router(tmp_path, """
[[rules]]
topic = "tele/+device=linky/SENSOR"
format = "tasmota"
numeric_strings = true
convert = { BASE = "Wh->kWh" }

[[rules]]
topic = "tele/+device/SENSOR"
format = "tasmota"
""")
    energy, tic = route(r, "tele/linky/SENSOR", TIC)
    assert tic.fields["BASE"] == 7970.903 and tic.fields["PAPP"] == 270.0 and tic.fields["IINST"] == 1.0
    assert "OPTARIF" not in tic.fields and "PTEC" not in tic.fields  # text, not numbers
    assert not getattr(route(r, "tele/linky/SENSOR", TIC), "skipped", ())
    points = route(r, "tele/other/SENSOR", TIC)
    assert [p.tags["sensor"] for p in points] == ["ENERGY"]
    assert ("TIC.BASE", "007970903") in points.skipped and len(points.skipped) == 7
    rej = reject(r, "tele/other/SENSOR", {"TIC": {"BASE": "007970903"}})
    assert rej.reason == "missing_field" and "TIC.BASE sent as text: set numeric_strings = true" in rej.detail


def test_json_numbers_sent_as_text_are_reported(tmp_path):
    r = router(tmp_path, """
[[rules]]
topic = "a/+x"
format = "json"

[[rules]]
topic = "b/+x"
format = "json"
fields = ["p"]
""")
    points = route(r, "a/x", {"p": 1, "e": "12.5", "state": "ON", "id": "0xabc"})
    assert points[0].fields == {"p": 1.0} and points.skipped == [("e", "12.5")]
    assert "e sent as text" in reject(r, "a/x", {"e": "12.5"}).detail
    rej = reject(r, "b/x", {"p": "12.5"})
    assert rej.reason == "wrong_type" and "number sent as text" in rej.detail and "numeric_strings" in rej.detail


# -- what worked but was not written down -----------------------------------------------------------------------
def test_root_arrays_chained_indices_and_index_then_key(tmp_path):
    r = router(tmp_path, """
[[rules]]
name = "go-e nrg"
topic = "go-eCharger/+serial/nrg"
format = "json"
measurement = "goe"
fields = [{ path = "[0]", name = "voltage_l1" }, { path = "[11]", name = "power" }, { path = "[-1]", name = "pf_n" }]

[[rules]]
name = "iammeter"
topic = "device/+serial/realtime"
format = "json"
measurement = "iammeter"
fields = [{ path = "Datas[0][2]", name = "power_a" }, { path = "Datas[2][2]", name = "power_c" },
          { path = "Datas[1][3]", name = "import_b" }]

[[rules]]
name = "venus batteries"
topic = "N/+portal/system/+instance/Batteries"
format = "json"
measurement = "victron"
fields = [{ path = "value[0].soc", name = "soc" }, { path = "value[0].power", name = "power" }]

[[rules]]
name = "grott"
topic = "energy/growatt"
format = "json"
measurement = "growatt"
fields = [{ path = "values.pvpowerout", name = "power", convert = 0.1 }, "values.pv1voltage"]
""")
    nrg = [231, 230, 232, 0, 16.1, 16.0, 15.9, 3719, 3680, 3689, 0, 11088, 99, 99, 99, 0]
    [p] = route(r, "go-eCharger/222222/nrg", nrg)
    assert p.fields == {"voltage_l1": 231.0, "power": 11088.0, "pf_n": 0.0} and p.tags == {"serial": "222222"}
    datas = {"SN": "0A1B2C3D", "Datas": [[233.5, 1.42, 280, 1523.72, 0.35, 50.01, 0.84],
                                         [232.1, 0.98, -125, 812.4, 20.12, 50.01, 0.55],
                                         [234.0, 2.11, 455, 2311.8, 0.0, 50.01, 0.92]]}
    assert route(r, "device/0A1B2C3D/realtime", datas)[0].fields == {"power_a": 280.0, "power_c": 455.0,
                                                                     "import_b": 812.4}
    batteries = {"value": [{"active_battery_service": True, "current": -3.1, "instance": 512,
                            "name": "SmartShunt 500A/50mV", "power": -160.2, "soc": 87.5, "voltage": 51.68}]}
    assert route(r, "N/c0619ab1cafe/system/0/Batteries", batteries)[0].fields == {"soc": 87.5, "power": -160.2}
    assert reject(r, "N/c0619ab1cafe/system/0/Batteries", {"value": []}).reason == "missing_field"
    [p] = route(r, "energy/growatt", {"values": {"pvpowerout": 26833, "pv1voltage": 3621}})
    assert p.fields == {"power": 2683.3, "values_pv1voltage": 3621.0}  # the factor on one field only


def test_topic_layouts(tmp_path):
    """Topics that begin with '/' or hold spaces, Tasmota's `%topic%/%prefix%/` FullTopic, and Shelly topic
    prefixes of several levels are plain topic patterns."""
    r = router(tmp_path, """
[[rules]]
topic = "/home/+room/power"
format = "number"
field = "power"

[[rules]]
topic = "home/+room/meter reading"
format = "number"
field = "energy"

[[rules]]
topic = "+device/tele/SENSOR"
format = "tasmota"

[[rules]]
topic = "home/+area/+device/status/+component"
format = "shelly_gen2"
""")
    [p] = route(r, "/home/living room/power", b"41.5")
    assert p.tags == {"room": "living room"} and p.to_line().startswith("mqtt,room=living\\ room power=41.5")
    assert route(r, "home/cellar/meter reading", b"1.5")[0].fields == {"energy": 1.5}
    assert reject(r, "home/cellar/power", b"1").reason == "unknown_topic"
    assert route(r, "stromzaehler/tele/SENSOR", {"SML": {"Total_in": 1.5}})[0].tags \
        == {"device": "stromzaehler", "sensor": "SML"}
    [p] = route(r, "home/garage/shellypro3em-c8f09e8a1b2c/status/em:0", {"id": 0, "total_act_power": 5})
    assert p.tags == {"area": "garage", "device": "shellypro3em-c8f09e8a1b2c", "component": "em:0"}
    assert r.subscriptions == ["+/tele/SENSOR", "/home/+/power", "home/+/+/status/+", "home/+/meter reading"]



@pytest.mark.parametrize("value, fmt, expected", [
    (1709294330.25, "auto", 1709294330_250_000_000),  # was …249_999_872: the binary double times 1e9
    (1709294330.25, "epoch_s", 1709294330_250_000_000),
    (1688212800123.7, "epoch_ms", 1688212800_123_700_000),
    ("1709294330.25", "epoch_s", 1709294330_250_000_000),
])
def test_epoch_times_sent_as_decimals_are_exact(tmp_path, value, fmt, expected):
    r = router(tmp_path, f'[[rules]]\ntopic = "d/+x"\nformat = "json"\ntime_path = "t"\ntime_format = "{fmt}"\n'
                         '[[rules]]\ntopic = "+device/events/rpc"\nformat = "shelly_gen2"\n')
    assert route(r, "d/x", {"t": value, "p": 1})[0].time_ns == expected
    if fmt == "auto" and not isinstance(value, str):
        doc = {"method": "NotifyStatus", "params": {"ts": value, "em:0": {"total_act_power": 1}}}
        assert route(r, "s/events/rpc", doc)[0].time_ns == expected
