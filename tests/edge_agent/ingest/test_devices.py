"""Every shipped device family end to end: the family's example rules (edge_agent/examples/devices-*.toml)
verbatim in a running agent, payloads as the vendor documents them published on the real broker, points read
back from the real influxd.

The payloads are written after the vendors' documentation pages named with each family (the pages could not be
fetched from this machine; they were written from what those pages document). Each family also sends what its
devices put on a broker besides the values (names, versions, states, availability): none of it may be received
or stored, because a rule subscribes only to what it takes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from tests.helpers.agent import ROOT, start_agent, wait_for
from tools.publish import Publisher

EXAMPLES = ROOT / "edge_agent" / "examples"
BERLIN_NOON_WINTER = 1709290800 * 10**9  # 2024-03-01T12:00:00 Europe/Berlin (CET) = 11:00 UTC


@dataclass
class Expect:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float]
    time_ns: int | None = None  # None: the receive time (the payload carries none)


@dataclass
class Family:
    example: str
    source: str  # the documentation the payloads follow
    messages: list[tuple[str, object]]
    expect: list[Expect]
    junk: list[tuple[str, object]] = field(default_factory=list)  # on the broker, never to be received
    rejects: list[str] = field(default_factory=list)  # reasons of documented messages that carry no value

    def __str__(self) -> str:
        return self.example


def _bytes(payload: object) -> bytes:
    return payload if isinstance(payload, bytes) else payload.encode() if isinstance(payload, str) \
        else json.dumps(payload).encode()


FAMILIES = [
    Family(
        "devices-tasmota.toml",
        "tasmota.github.io/docs/MQTT/ (tele/%topic%/SENSOR), /docs/Smart-Meter-Interface/ (SML script: "
        "+1,3,s,0,9600,SML and the Total_in/Total_out/Power_curr lines of the eHZ example), /docs/DS18x20/",
        [("tele/plug-washer/SENSOR",
          {"Time": "2024-03-01T12:00:00", "ENERGY": {"TotalStartTime": "2023-01-01T10:00:00", "Total": 123.456,
                                                     "Yesterday": 1.2, "Today": 0.8, "Period": 3, "Power": 150,
                                                     "ApparentPower": 160, "ReactivePower": 55, "Factor": 0.94,
                                                     "Voltage": 231, "Current": 0.65}}),
         ("tele/stromzaehler/SENSOR",
          {"Time": "2024-03-01T12:00:00", "SML": {"Total_in": 12345.678, "Total_out": 2345.678, "Power_curr": -512}}),
         ("tele/sonoff-th/SENSOR",
          {"Time": "2024-03-01T12:00:00", "DS18B20": {"Id": "01143A2D0BAA", "Temperature": 21.5}, "TempUnit": "C"})],
        [Expect("tasmota", {"device": "plug-washer", "sensor": "ENERGY"},
                {"Total": 123.456, "Today": 0.8, "Power": 150, "Voltage": 231, "Factor": 0.94}, BERLIN_NOON_WINTER),
         Expect("tasmota", {"device": "stromzaehler", "sensor": "SML"},
                {"Total_in": 12345.678, "Total_out": 2345.678, "Power_curr": -512}, BERLIN_NOON_WINTER),
         Expect("tasmota", {"device": "sonoff-th", "sensor": "DS18B20"}, {"Temperature": 21.5}, BERLIN_NOON_WINTER)],
        junk=[("tele/stromzaehler/LWT", "Online"),
              ("tele/plug-washer/STATE", {"Time": "2024-03-01T12:00:00", "Uptime": "0T01:00:00", "POWER": "ON"}),
              ("stat/plug-washer/POWER", "ON")],
    ),
    Family(
        "devices-shelly-gen1.toml",
        "shelly-api-docs.shelly.cloud/gen1/ #shelly-plug-plugs-mqtt (relay/0/power W, relay/0/energy Watt-minute), "
        "#shelly-3em-mqtt (emeter/<i>/power, total and total_returned in Wh)",
        [("shellies/shellyplug-s-C45BBE/relay/0/power", "42.47"),
         ("shellies/shellyplug-s-C45BBE/relay/0/energy", "6543"),
         ("shellies/shellyem3-BCDDC2B1B8B5/emeter/0/power", "512.30"),
         ("shellies/shellyem3-BCDDC2B1B8B5/emeter/0/total", "123456.7"),
         ("shellies/shellyem3-BCDDC2B1B8B5/emeter/0/total_returned", "9876.5"),
         ("shellies/shellyem3-BCDDC2B1B8B5/emeter/1/power", "-20.1")],
        [Expect("shelly_relay", {"device": "shellyplug-s-C45BBE", "channel": "0"},
                {"power": 42.47, "energy": 6543 / 60000}),
         Expect("shelly_emeter", {"device": "shellyem3-BCDDC2B1B8B5", "channel": "0"},
                {"power": 512.3, "total": 123.4567, "total_returned": 9.8765}),
         Expect("shelly_emeter", {"device": "shellyem3-BCDDC2B1B8B5", "channel": "1"}, {"power": -20.1})],
        junk=[("shellies/shellyplug-s-C45BBE/relay/0", "on"), ("shellies/shellyplug-s-C45BBE/temperature", "35.1"),
              ("shellies/shellyem3-BCDDC2B1B8B5/emeter/0/energy", "1234"),
              ("shellies/announce", {"id": "shellyplug-s-C45BBE", "model": "SHPLG-S", "fw_ver": "20230913-112003"}),
              ("shellies/shellyplug-s-C45BBE/online", "true")],
    ),
    Family(
        "devices-shelly-gen2.toml",
        "shelly-api-docs.shelly.cloud/gen2/ General/RPCChannels#mqtt (<prefix>/status/<component>, "
        "<prefix>/events/rpc NotifyStatus), ComponentsAndServices/Switch, PM1, EM, EMData, EM1 (Status)",
        [("shellyplusplugs-e465b8a1b2c4/status/switch:0",
          {"id": 0, "source": "init", "output": True, "apower": 81.2, "voltage": 229.8, "current": 0.401,
           "aenergy": {"total": 1523.455, "by_minute": [1353.1, 1353.1, 1353.1], "minute_ts": 1709294400},
           "temperature": {"tC": 40.3, "tF": 104.5}}),
         ("shellypmminig3-84fce63a1b2c/status/pm1:0",
          {"id": 0, "voltage": 230.1, "current": 0.12, "apower": 25.3, "freq": 50.0,
           "aenergy": {"total": 456.789, "by_minute": [0, 0, 0], "minute_ts": 1709294400},
           "ret_aenergy": {"total": 0.0, "by_minute": [0, 0, 0], "minute_ts": 1709294400}}),
         ("shellypro3em-c8f09e8a1b2c/status/em:0",
          {"id": 0, "a_current": 1.2, "a_voltage": 230.0, "a_act_power": 250.5, "a_aprt_power": 270.1,
           "a_pf": 0.93, "b_current": 0.5, "b_voltage": 231.0, "b_act_power": 100.2, "b_aprt_power": 110.0,
           "b_pf": 0.91, "c_current": 0.9, "c_voltage": 229.5, "c_act_power": 180.0, "c_aprt_power": 200.0,
           "c_pf": 0.9, "n_current": None, "total_current": 2.6, "total_act_power": 530.7,
           "total_aprt_power": 580.1, "user_calibrated_phase": []}),
         ("shellypro3em-c8f09e8a1b2c/status/emdata:0",
          {"id": 0, "a_total_act_energy": 10000.5, "a_total_act_ret_energy": 5.5, "b_total_act_energy": 2000.0,
           "b_total_act_ret_energy": 0.0, "c_total_act_energy": 3000.0, "c_total_act_ret_energy": 0.0,
           "total_act": 15000.5, "total_act_ret": 5.5}),
         ("shellyproem50-a0a3b3c4d5e6/status/em1:0",
          {"id": 0, "current": 2.1, "voltage": 230.2, "act_power": 470.5, "aprt_power": 480.0, "pf": 0.98,
           "freq": 50.0, "calibration": "factory"}),
         ("shellypro3em-c8f09e8a1b2c/events/rpc",
          {"src": "shellypro3em-c8f09e8a1b2c", "dst": "shellypro3em-c8f09e8a1b2c/events", "method": "NotifyStatus",
           "params": {"ts": 1709294400.12, "em:0": {"id": 0, "a_act_power": 245.1, "total_act_power": 812.4}}})],
        [Expect("shelly", {"device": "shellyplusplugs-e465b8a1b2c4", "component": "switch:0"},
                {"apower": 81.2, "aenergy_total": 1.523455, "temperature_tC": 40.3}),
         Expect("shelly", {"device": "shellypmminig3-84fce63a1b2c", "component": "pm1:0"},
                {"apower": 25.3, "aenergy_total": 0.456789, "ret_aenergy_total": 0.0}),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "em:0"},
                {"a_act_power": 250.5, "total_act_power": 530.7}),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "emdata:0"},
                {"total_act": 15.0005, "total_act_ret": 0.0055, "a_total_act_energy": 10.0005}),
         Expect("shelly", {"device": "shellyproem50-a0a3b3c4d5e6", "component": "em1:0"}, {"act_power": 470.5}),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "em:0"},
                {"total_act_power": 812.4}, 1709294400_120_000_000)],
        junk=[("shellyplusplugs-e465b8a1b2c4/online", "true"),
              ("shellyplusplugs-e465b8a1b2c4/status/sys", {"mac": "E465B8A1B2C4", "uptime": 1234, "ram_free": 1000}),
              ("shellyplusplugs-e465b8a1b2c4/status/wifi", {"sta_ip": "192.168.1.20", "rssi": -60})],
    ),
    Family(
        "devices-zigbee2mqtt.toml",
        "zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html (zigbee2mqtt/FRIENDLY_NAME, bridge/…, "
        "…/availability), zigbee2mqtt.io/devices/TS011F_plug_1.html (exposes state, power W, current A, voltage V, "
        "energy kWh)",
        [("zigbee2mqtt/plug/washing_machine",
          {"child_lock": "UNLOCK", "current": 0.18, "energy": 12.34, "indicator_mode": "off/on", "linkquality": 156,
           "power": 41.7, "power_outage_memory": "restore", "state": "ON", "voltage": 231,
           "update": {"installed_version": 192, "latest_version": 192, "state": "idle"}, "update_available": False}),
         ("zigbee2mqtt/plug/dryer", {"state": "OFF", "power": 0, "energy": 80.5, "linkquality": 90})],
        [Expect("zigbee_plug", {"device": "washing_machine"},
                {"power": 41.7, "energy": 12.34, "voltage": 231, "current": 0.18, "on": 1}),
         Expect("zigbee_plug", {"device": "dryer"}, {"power": 0, "energy": 80.5, "on": 0})],
        junk=[("zigbee2mqtt/bridge/state", {"state": "online"}),
              ("zigbee2mqtt/living_room_light", {"state": "ON", "brightness": 254, "linkquality": 120}),
              ("zigbee2mqtt/plug/washing_machine/availability", {"state": "online"}),
              ("zigbee2mqtt/bridge/info", {"version": "1.35.3", "coordinator": {"type": "zStack3x0"}})],
    ),
    Family(
        "devices-opendtu.toml",
        "github.com/tbnobody/OpenDTU docs/MQTT_Topics.md (inverter topics: <serial>/0/power W, yieldtotal kWh, "
        "yieldday Wh; <serial>/<1-4>/… per DC input; <serial>/name, status/…, device/…)",
        [("solar/116183771004/0/power", "612.3"), ("solar/116183771004/0/yieldtotal", "1234.567"),
         ("solar/116183771004/0/yieldday", "3456"), ("solar/116183771004/0/temperature", "31.2"),
         ("solar/116183771004/1/power", "310.2"), ("solar/116183771004/1/yieldtotal", "617.2")],
        [Expect("opendtu", {"inverter": "116183771004", "channel": "0"},
                {"power": 612.3, "yieldtotal": 1234.567, "yieldday": 3.456, "temperature": 31.2}),
         Expect("opendtu", {"inverter": "116183771004", "channel": "1"}, {"power": 310.2, "yieldtotal": 617.2})],
        junk=[("solar/116183771004/name", "Dach"), ("solar/116183771004/status/producing", "1"),
              ("solar/116183771004/status/last_update", "1709294400"), ("solar/116183771004/1/name", "Süd"),
              ("solar/116183771004/device/fwbuildversion", "10012"), ("solar/dtu/uptime", "3600"),
              ("solar/dtu/status", "online")],
    ),
    Family(
        "devices-esphome.toml",
        "esphome.io/components/mqtt.html (state topic <TOPIC_PREFIX>/<COMPONENT_TYPE>/<COMPONENT_NAME>/state, "
        "birth/will on <TOPIC_PREFIX>/status); a sensor without a state publishes nan",
        [("esp-heatpump/sensor/power/state", "1830.5"), ("esp-heatpump/sensor/total_daily_energy/state", "4.217"),
         ("esp-heatpump/sensor/flow_temperature/state", "nan")],
        [Expect("esphome", {"node": "esp-heatpump"}, {"power": 1830.5, "total_daily_energy": 4.217})],
        junk=[("esp-heatpump/status", "online"), ("esp-heatpump/binary_sensor/defrost/state", "ON"),
              ("esp-heatpump/switch/relay/state", "OFF"), ("esp-heatpump/text_sensor/mode/state", "heating"),
              ("esp-heatpump/debug", "[D][sensor:094]: 'power': Sending state 1830.5 W")],
        rejects=["not_finite"],
    ),
    Family(
        "devices-victron.toml",
        "github.com/victronenergy/dbus-flashmq README (N/<portal ID>/<service type>/<device instance>/<D-Bus path> "
        "with {\"value\": …}, keepalive), github.com/victronenergy/venus/wiki/dbus (battery /Dc/0/Power, /Soc; "
        "system /Dc/Battery/Power; solarcharger /Yield/Power)",
        [("N/c0619ab1cafe/battery/512/Dc/0/Power", {"value": -1250.4}),
         ("N/c0619ab1cafe/battery/512/Soc", {"value": 87.5}),
         ("N/c0619ab1cafe/battery/512/History/ChargedEnergy", {"value": 1523.7}),
         ("N/c0619ab1cafe/system/0/Dc/Battery/Power", {"value": -1250}),
         ("N/c0619ab1cafe/solarcharger/288/Yield/Power", {"value": 412.0}),
         ("N/c0619ab1cafe/battery/512/Dc/0/Current", {"value": None})],
        [Expect("victron", {"portal": "c0619ab1cafe", "service": "battery", "instance": "512"},
                {"Dc/0/Power": -1250.4, "Soc": 87.5, "History/ChargedEnergy": 1523.7}),
         Expect("victron", {"service": "system", "instance": "0"}, {"Dc/Battery/Power": -1250}),
         Expect("victron", {"service": "solarcharger", "instance": "288"}, {"Yield/Power": 412.0})],
        junk=[("N/c0619ab1cafe/battery/512/ProductName", {"value": "SmartShunt 500A/50mV"}),
              ("N/c0619ab1cafe/battery/512/Dc/0/Temperature", {"value": None}),
              ("N/c0619ab1cafe/battery/512/Serial", {"value": "HQ2133ABCDE"}),
              ("N/c0619ab1cafe/full_publish_completed", {"full-publish-completed-echo": "abc", "value": 1})],
        rejects=["missing_field"],  # Dc/0/Current is null: no value
    ),
    Family(
        "devices-dsmr-reader.toml",
        "dsmr-reader.readthedocs.io, MQTT: JSON telegram on dsmr/json (fields as in its default mapping; decimals "
        "serialized as strings by Django's JSON encoder); the split-topic telegram (dsmr/reading/…) is separate",
        [("dsmr/json", {"id": 51, "timestamp": "2024-03-01T11:00:00Z", "electricity_delivered_1": "1234.567",
                        "electricity_returned_1": "10.123", "electricity_delivered_2": "2345.678",
                        "electricity_returned_2": "543.210", "electricity_currently_delivered": "0.412",
                        "electricity_currently_returned": "0.000", "phase_currently_delivered_l1": "0.212",
                        "phase_currently_delivered_l2": "0.100", "phase_currently_delivered_l3": "0.100",
                        "phase_currently_returned_l1": "0.000", "phase_voltage_l1": "230.1",
                        "phase_power_current_l1": "1", "extra_device_timestamp": "2024-03-01T10:55:00Z",
                        "extra_device_delivered": "3456.789"})],
        [Expect("dsmr", {}, {"electricity_delivered_1": 1234.567, "electricity_returned_2": 543.21,
                             "electricity_currently_delivered": 0.412, "phase_voltage_l1": 230.1,
                             "extra_device_delivered": 3456.789}, 1709290800 * 10**9)],
        junk=[("dsmr/reading/electricity_delivered_1", "1234.567"),
              ("dsmr/day-consumption", {"day": "2024-03-01", "electricity1": "3.210"})],
    ),
    Family(
        "devices-hass-statestream.toml",
        "home-assistant.io/integrations/mqtt_statestream/ (<base_topic>/<domain>/<entity>/state, attributes and "
        "timestamps as JSON on sibling topics)",
        [("homeassistant/sensor/grid_import_energy/state", "12345.67"),
         ("homeassistant/sensor/heat_pump_power/state", "1830"),
         ("homeassistant/sensor/grid_export_energy/state", "unavailable")],
        [Expect("hass", {"entity": "grid_import_energy", "domain": "sensor"}, {"value": 12345.67}),
         Expect("hass", {"entity": "heat_pump_power"}, {"value": 1830})],
        junk=[("homeassistant/sensor/grid_import_energy/unit_of_measurement", '"kWh"'),
              ("homeassistant/sensor/grid_import_energy/last_changed", '"2024-03-01T11:00:00+00:00"'),
              ("homeassistant/sensor/sun_next_dawn/state", "2024-03-02T05:40:00+00:00"),
              ("homeassistant/sensor/edge_power/config", {"name": "x", "state_topic": "y"})],
        rejects=["wrong_type"],  # "unavailable": no value
    ),
    Family(
        "devices-evcc.toml",
        "docs.evcc.io, MQTT (evcc publishes its state under evcc/: site/gridPower, pvPower, homePower, "
        "batteryPower, batterySoc; loadpoints/<n>/chargePower W, chargedEnergy Wh)",
        [("evcc/site/gridPower", "-1512.3"), ("evcc/site/pvPower", "4210"), ("evcc/site/homePower", "812.7"),
         ("evcc/site/batterySoc", "57"), ("evcc/loadpoints/1/chargePower", "11040"),
         ("evcc/loadpoints/1/chargedEnergy", "5321")],
        [Expect("evcc", {}, {"gridPower": -1512.3, "pvPower": 4210, "homePower": 812.7, "batterySoc": 57}),
         Expect("evcc_loadpoint", {"loadpoint": "1"}, {"chargePower": 11040, "chargedEnergy": 5.321})],
        junk=[("evcc/status", "online"), ("evcc/site/siteTitle", "Home"), ("evcc/loadpoints/1/mode", "pv"),
              ("evcc/loadpoints/1/charging", "true"), ("evcc/site/currency", "EUR")],
    ),
]


def _config(tmp_path, port: int, url: str, db: str, client_id: str, example: str):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""[agent]
state_dir = "{tmp_path / 'state'}"
[mqtt]
port = {port}
client_id = "{client_id}"
reconnect_max_s = 2
[storage]
url = "{url}"
database = "{db}"
[spool]
batch_interval_s = 0.2
[health]
interval_s = 3600
""" + (EXAMPLES / example).read_text())
    return cfg


def rows(influxd, db: str, measurement: str) -> list[dict]:
    res = influxd.query(f'SELECT * FROM "{measurement}" GROUP BY *', db=db)["results"][0]
    out = []
    for s in res.get("series", []):
        for v in s["values"]:
            row = {k: x for k, x in zip(s["columns"], v, strict=True) if x is not None}
            out.append({**row, **(s.get("tags") or {})})
    return out


def found(expect: Expect, got: list[dict], t0: int, t1: int) -> bool:
    """A point with the expected tags and fields. Readings stamped with their receive time (the payload has no
    time) are matched field by field: values sent on separate topics share a point only when they arrive in one
    group commit, which depends on timing."""
    def match(row: dict, fields: dict[str, float]) -> bool:
        if any(row.get(k) != v for k, v in expect.tags.items()):
            return False
        if any(k not in row or row[k] != pytest.approx(v, rel=1e-9) for k, v in fields.items()):
            return False
        return (row["time"] == expect.time_ns) if expect.time_ns is not None else (t0 <= row["time"] <= t1)

    if expect.time_ns is not None:
        return any(match(row, expect.fields) for row in got)
    return all(any(match(row, {k: v}) for row in got) for k, v in expect.fields.items())


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_device_family(family: Family, tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = _config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                  f"agent-{influx_db_name}"[:60], family.example)
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}"[:60])
    try:
        t0 = time.time_ns()
        # what else devices publish first, then the values: once the values are in, the rest would have been too
        pub.publish_all([(t, _bytes(p)) for t, p in family.junk + family.messages])
        measurements = sorted({e.measurement for e in family.expect})

        def all_found():
            got = [r for m in measurements for r in rows(influxd_session, influx_db_name, m)]
            return all(found(e, got, t0, time.time_ns()) for e in family.expect)

        wait_for(all_found, timeout=20)
        wait_for(lambda: agent.health.get("received") >= len(family.messages), timeout=10)
        assert agent.health.get("received") == len(family.messages), "a message the rules do not take arrived"
        assert agent.health.get("rejected") == len(family.rejects)
        for reason in family.rejects:
            assert agent.health.get(f"rejected_{reason}") >= 1, reason
    finally:
        pub.close()
        agent.stop()


def test_every_family_example_is_tested():
    shipped = sorted(p.name for p in EXAMPLES.glob("devices-*.toml"))
    assert shipped == sorted(f.example for f in FAMILIES)
