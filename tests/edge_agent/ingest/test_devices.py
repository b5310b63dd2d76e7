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
    ignored: int = 0  # normal messages with nothing to store (Shelly NotifyEvent …): counted, not dead-lettered
    skipped: int = 0  # numbers sent as text that a rule does not take: counted (numeric_text_skipped)
    absent: list[str] = field(default_factory=list)  # fields that must not be stored (housekeeping)

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
          {"Time": "2024-03-01T12:00:00", "DS18B20": {"Id": "01143A2D0BAA", "Temperature": 21.5}, "TempUnit": "C"}),
         # tasmota.github.io/docs/Teleinfo/: a Linky meter's counters arrive as text
         ("tele/linky/SENSOR",
          {"Time": "2024-03-01T12:00:00",
           "ENERGY": {"TotalStartTime": "2023-01-01T00:00:00", "Total": 7970.903, "Power": 270},
           "TIC": {"ADCO": "031762120162", "OPTARIF": "BASE", "ISOUSC": "30", "BASE": "007970903", "PTEC": "TH..",
                   "IINST": "001", "IMAX": "090", "PAPP": "00270", "HHPHC": "A", "MOTDETAT": "000000"}}),
         ("tele/teleinfo-garage/SENSOR",
          {"Time": "2024-03-01T12:00:00", "ENERGY": {"Power": 12}, "TIC": {"BASE": "001234567", "PTEC": "TH.."}})],
        [Expect("tasmota", {"device": "plug-washer", "sensor": "ENERGY"},
                {"Total": 123.456, "Today": 0.8, "Power": 150, "Voltage": 231, "Factor": 0.94}, BERLIN_NOON_WINTER),
         Expect("tasmota", {"device": "stromzaehler", "sensor": "SML"},
                {"Total_in": 12345.678, "Total_out": 2345.678, "Power_curr": -512}, BERLIN_NOON_WINTER),
         Expect("tasmota", {"device": "sonoff-th", "sensor": "DS18B20"}, {"Temperature": 21.5}, BERLIN_NOON_WINTER),
         Expect("tasmota", {"device": "linky", "sensor": "TIC"},
                {"BASE": 7970.903, "PAPP": 270, "IINST": 1, "ISOUSC": 30, "ADCO": 31762120162}, BERLIN_NOON_WINTER),
         Expect("tasmota", {"device": "teleinfo-garage", "sensor": "ENERGY"}, {"Power": 12}, BERLIN_NOON_WINTER)],
        junk=[("tele/stromzaehler/LWT", "Online"),
              ("tele/plug-washer/STATE", {"Time": "2024-03-01T12:00:00", "Uptime": "0T01:00:00", "POWER": "ON"}),
              ("stat/plug-washer/POWER", "ON")],
        skipped=1,  # teleinfo-garage's BASE: the general rule has no numeric_strings; counted and logged
        absent=["OPTARIF", "PTEC"],
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
           "b_total_act_ret_energy": 0.0, "c_total_act_energy": 119881.35, "c_total_act_ret_energy": 0.0,
           "total_act": 131881.85, "total_act_ret": 5.5}),
         ("shellyproem50-a0a3b3c4d5e6/status/em1:0",
          {"id": 0, "current": 2.1, "voltage": 230.2, "act_power": 470.5, "aprt_power": 480.0, "pf": 0.98,
           "freq": 50.0, "calibration": "factory"}),
         ("shellypro3em-c8f09e8a1b2c/events/rpc",
          {"src": "shellypro3em-c8f09e8a1b2c", "dst": "shellypro3em-c8f09e8a1b2c/events", "method": "NotifyStatus",
           "params": {"ts": 1709294400.12, "em:0": {"id": 0, "a_act_power": 245.1, "total_act_power": 812.4}}}),
         # General/Notifications: what else arrives on events/rpc
         ("shellypro3em-c8f09e8a1b2c/events/rpc",
          {"src": "shellypro3em-c8f09e8a1b2c", "dst": "shellypro3em-c8f09e8a1b2c/events",
           "method": "NotifyFullStatus",
           "params": {"ts": 1709294330.25, "ble": {}, "cloud": {"connected": True}, "mqtt": {"connected": True},
                      "em:0": {"id": 0, "a_act_power": 240.0, "total_act_power": 800.5, "n_current": None},
                      "emdata:0": {"id": 0, "total_act": 131870.05, "total_act_ret": 5.5},
                      "sys": {"mac": "C8F09E8A1B2C", "restart_required": False, "uptime": 86400, "ram_size": 246880,
                              "ram_free": 113296, "fs_size": 524288, "fs_free": 180224, "cfg_rev": 12},
                      "wifi": {"sta_ip": "192.168.1.40", "status": "got ip", "ssid": "home", "rssi": -58}}}),
         ("shellypro3em-c8f09e8a1b2c/events/rpc",  # EMData's record of the minute: unnamed numbers
          {"src": "shellypro3em-c8f09e8a1b2c", "dst": "shellypro3em-c8f09e8a1b2c/events", "method": "NotifyEvent",
           "params": {"ts": 1709294460.0, "events": [
               {"component": "emdata:0", "id": 0, "event": "data", "ts": 1709294400.0,
                "data": {"ts": 1709294400, "period": 60, "values": [[0.4, 0.0, 231.2, 230.1, 1.2, 0.0, 231.9]]}}]}}),
         ("shellyplusplugs-e465b8a1b2c4/events/rpc",
          {"src": "shellyplusplugs-e465b8a1b2c4", "dst": "shellyplusplugs-e465b8a1b2c4/events",
           "method": "NotifyStatus", "params": {"ts": 1709294401.5, "cloud": {"connected": False}}}),
         ("shellyplus1-a8032ab12345/events/rpc",
          {"src": "shellyplus1-a8032ab12345", "dst": "shellyplus1-a8032ab12345/events", "method": "NotifyStatus",
           "params": {"ts": 1709294402.0, "input:0": {"id": 0, "state": True}}})],
        [Expect("shelly", {"device": "shellyplusplugs-e465b8a1b2c4", "component": "switch:0"},
                {"apower": 81.2, "aenergy_total": 1.523455, "temperature_tC": 40.3}),
         Expect("shelly", {"device": "shellypmminig3-84fce63a1b2c", "component": "pm1:0"},
                {"apower": 25.3, "aenergy_total": 0.456789, "ret_aenergy_total": 0.0}),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "em:0"},
                {"a_act_power": 250.5, "total_act_power": 530.7}),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "emdata:0"},
                {"total_act": 131.88185, "total_act_ret": 0.0055, "a_total_act_energy": 10.0005,
                 "c_total_act_energy": 119.88135}),
         Expect("shelly", {"device": "shellyproem50-a0a3b3c4d5e6", "component": "em1:0"}, {"act_power": 470.5}),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "em:0"},
                {"total_act_power": 812.4}, 1709294400_120_000_000),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "em:0"},
                {"total_act_power": 800.5}, 1709294330_250_000_000),
         Expect("shelly", {"device": "shellypro3em-c8f09e8a1b2c", "component": "emdata:0"},
                {"total_act": 131.87005, "total_act_ret": 0.0055}, 1709294330_250_000_000)],
        junk=[("shellyplusplugs-e465b8a1b2c4/online", "true"),
              ("shellyplusplugs-e465b8a1b2c4/status/sys", {"mac": "E465B8A1B2C4", "uptime": 1234, "ram_free": 1000}),
              ("shellyplusplugs-e465b8a1b2c4/status/wifi", {"sta_ip": "192.168.1.20", "rssi": -60})],
        ignored=3,  # NotifyEvent, NotifyStatus of cloud and of input:0
        absent=["uptime", "ram_free", "fs_free", "rssi", "cfg_rev", "connected"],
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
         ("zigbee2mqtt/plug/dryer", {"state": "OFF", "power": 0, "energy": 80.5, "linkquality": 90}),
         # zigbee2mqtt.io/devices/PJ-1203A.html: a magnitude and a direction per clamp
         ("zigbee2mqtt/meter/grid",
          {"ac_frequency": 50, "current_a": 0.57, "current_b": 1.98, "energy_a": 1523.45, "energy_b": 87.21,
           "energy_flow_a": "producing", "energy_flow_b": "consuming", "energy_produced_a": 2456.78,
           "energy_produced_b": 0, "linkquality": 120, "power_a": 130.8, "power_b": 455.2, "power_factor_a": 79,
           "power_factor_b": 92, "update_frequency": 10, "voltage": 231.4})],
        [Expect("zigbee_plug", {"device": "washing_machine"},
                {"power": 41.7, "energy": 12.34, "voltage": 231, "current": 0.18, "on": 1}),
         Expect("zigbee_plug", {"device": "dryer"}, {"power": 0, "energy": 80.5, "on": 0}),
         Expect("zigbee_meter", {"device": "grid"},
                {"power_a": -130.8, "power_b": 455.2, "energy_a": 1523.45, "energy_produced_a": 2456.78,
                 "voltage": 231.4})],
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
         ("N/c0619ab1cafe/battery/512/Dc/0/Current", {"value": None}),
         ("N/c0619ab1cafe/system/0/Batteries",
          {"value": [{"active_battery_service": True, "current": -3.1, "id": "com.victronenergy.battery.ttyS7",
                      "instance": 512, "name": "SmartShunt 500A/50mV", "power": -160.2, "soc": 87.5, "state": 2,
                      "voltage": 51.68}]})],
        [Expect("victron", {"portal": "c0619ab1cafe", "service": "battery", "instance": "512"},
                {"Dc/0/Power": -1250.4, "Soc": 87.5, "History/ChargedEnergy": 1523.7}),
         Expect("victron", {"service": "system", "instance": "0"}, {"Dc/Battery/Power": -1250}),
         Expect("victron", {"service": "solarcharger", "instance": "288"}, {"Yield/Power": 412.0}),
         Expect("victron_batteries", {"portal": "c0619ab1cafe", "instance": "0"},
                {"soc": 87.5, "power": -160.2, "voltage": 51.68, "current": -3.1})],
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
    Family(
        "devices-emonhub.toml",
        "docs.openenergymonitor.org/emonhub/ (MQTT interfacer, node_format: emonhub/rx/<node>/values, comma-separated "
        "values in the order of the node's names in emonhub.conf; emonTx v3 and emonPi default names)",
        [("emonhub/rx/8/values", "252,0,18,0,241.95,18.6,300,300,300,300,300,1234"),
         ("emonhub/rx/5/values", "1420,-380,1040,239.4,21.3,300,300,300,300,300,567")],
        [Expect("emonhub", {"node": "8"}, {"power1": 252, "power2": 0, "power3": 18, "power4": 0, "vrms": 241.95,
                                           "temp1": 18.6, "pulse": 1234}),
         Expect("emonhub", {"node": "5"}, {"power1": 1420, "power2": -380, "power1pluspower2": 1040, "vrms": 239.4,
                                           "t1": 21.3, "pulsecount": 567})],
        junk=[("emonhub/rx/20/values", "1,2,3"), ("emon/emontx/power1", "252"), ("emonhub/tx/8/values", "1")],
        absent=["temp2", "t2"],
    ),
    Family(
        "devices-marstek.toml",
        "github.com/tomquist/hm2mqtt (B2500: the device answers cd=1 on hame_energy/<type>/device/<mac>/ctrl with "
        "key=value pairs: w1/w2 solar W, g1/g2 output W, pe SoC %, kn Wh, tl/th cell temperatures)",
        [("hame_energy/HMA-1/device/60323bd14b6e/ctrl",
          "p1=1,p2=1,w1=233,w2=0,pe=78,vv=224,sv=9,cs=0,cd=0,am=0,o1=1,o2=1,do=90,lv=800,cj=1,kn=1800,g1=110,g2=108,"
          "b1=0,b2=0,md=0,d1=1,e1=0:0,f1=23:59,h1=800,d2=0,e2=0:0,f2=23:59,h2=200,sg=0,sp=80,st=0,tl=12,th=13,"
          "tc=0,tf=0,fc=202310231502,id=5,a0=78,a1=0,a2=0,l0=0,l1=0,c0=255,c1=4,bc=520,bs=330,pt=1250,it=480")],
        [Expect("b2500", {"type": "HMA-1", "mac": "60323bd14b6e"},
                {"soc": 78, "pv1_power": 233, "pv2_power": 0, "out1_power": 110, "out2_power": 108, "energy": 1.8,
                 "temperature_min": 12, "temperature_max": 13})],
        junk=[("hame_energy/HMA-1/App/60323bd14b6e/ctrl", "cd=1")],
        absent=["fc", "e1", "do"],
    ),
    Family(
        "devices-go-e.toml",
        "github.com/goecharger/go-eCharger-API-v2 (apikeys-en.md: nrg = U L1-L3, N; I L1-L3; P L1-L3, N, total; "
        "pf L1-L3, N; eto Wh; wh Wh; MQTT: go-eCharger/<serial>/<key>, values as JSON)",
        [("go-eCharger/222222/nrg", [231, 230, 232, 0, 16.1, 16.0, 15.9, 3719, 3680, 3689, 0, 11088, 99, 99, 99, 0]),
         ("go-eCharger/222222/eto", "123456"), ("go-eCharger/222222/wh", "5321.5")],
        [Expect("goe", {"serial": "222222"}, {"voltage_l1": 231, "current_l3": 15.9, "power_l2": 3680, "power": 11088,
                                              "eto": 123.456, "wh": 5.3215})],
        junk=[("go-eCharger/222222/car", "2"), ("go-eCharger/222222/amp", "16"), ("go-eCharger/222222/fna", '"Garage"')],
    ),
    Family(
        "devices-iammeter.toml",
        "iammeter.com/docs (MQTT upload: device/<SN>/realtime; WEM3080T Datas: per phase voltage, current, power, "
        "import kWh, export kWh, frequency, power factor)",
        [("device/0A1B2C3D/realtime",
          {"SN": "0A1B2C3D", "mac": "B0F8932A1B2C", "version": "i.76.036.6", "server": "em", "type": "3080T",
           "Datas": [[233.5, 1.42, 280, 1523.72, 0.35, 50.01, 0.84], [232.1, 0.98, -125, 812.4, 20.12, 50.01, 0.55],
                     [234.0, 2.11, 455, 2311.8, 0.0, 50.01, 0.92]]})],
        [Expect("iammeter", {"serial": "0A1B2C3D"},
                {"power_a": 280, "power_b": -125, "power_c": 455, "import_a": 1523.72, "export_b": 20.12,
                 "voltage_c": 234.0})],
    ),
    Family(
        "devices-growatt-grott.toml",
        "github.com/johanmeijer/grott (MQTT: energy/growatt, {device, time, buffered, values} with the inverter's "
        "registers in 0.1 W, 0.1 V, 0.1 kWh, 0.01 Hz)",
        [("energy/growatt",
          {"device": "NTCXXXXXXX", "time": "2024-03-01T12:00:00", "buffered": "no",
           "values": {"datalogserial": "JPC2XXXXXX", "pvserial": "NTCXXXXXXX", "pvstatus": 1, "pvpowerin": 27950,
                      "pv1voltage": 3621, "pv1current": 40, "pv1watt": 14480, "pv2voltage": 3400, "pv2current": 39,
                      "pv2watt": 13470, "pvpowerout": 26833, "pvfrequentie": 4998, "pvgridvoltage": 2331,
                      "pvenergytoday": 53, "pvenergytotal": 118316, "pvtemperature": 391}})],
        [Expect("growatt", {"device": "NTCXXXXXXX"},
                {"power": 2683.3, "pv_power": 2795, "pv1_power": 1448, "pv1_voltage": 362.1, "frequency": 49.98,
                 "energy_today": 5.3, "energy_total": 11831.6, "temperature": 39.1}, BERLIN_NOON_WINTER)],
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
        # exactly: a converted reading is the decimal the device meant (131881.85 Wh is 131.88185 kWh)
        if any(k not in row or row[k] != v for k, v in fields.items()):
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
        assert agent.health.get("ignored") == family.ignored
        assert agent.health.get("numeric_text_skipped") == family.skipped
        got = [r for m in measurements for r in rows(influxd_session, influx_db_name, m)]
        assert not {k for r in got for k in r} & set(family.absent)
    finally:
        pub.close()
        agent.stop()


def test_every_family_example_is_tested():
    shipped = sorted(p.name for p in EXAMPLES.glob("devices-*.toml"))
    assert shipped == sorted(f.example for f in FAMILIES)
