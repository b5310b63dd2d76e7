"""Plain numbers (`number`, `shelly_gen1`) and Shelly gen2/gen3/gen4 JSON (`shelly_gen2`).

- `number`/`shelly_gen1`: the payload is one number as text; the field is the rule's `field` or the topic's
  `+field` level (Shelly gen1: `shellies/<id>/emeter/<n>/power`, `…/relay/<n>/energy`).
- `shelly_gen2`: `<prefix>/status/<component>` JSON (the component's numbers, nested objects such as `aenergy`
  flattened with `_`) or `<prefix>/events/rpc` notifications; tag `component`. On events/rpc:
  - `NotifyStatus` (what changed) and `NotifyFullStatus` (everything, sent when the device connects): every
    component object in `params` is a point, time `params.ts`;
  - `NotifyEvent` (button pushes, the Pro 3EM's per-minute `data` records of unnamed numbers, OTA progress …)
    carries events, not values: ignored (counted as `ignored`), never dead-lettered;
  - a component with no numbers (`cloud`, `input:0`, a relay without metering) is a state change: ignored too.
  Which components: the rule's `components` (`["em:0", "emdata:0"]`, or a type: `["switch"]` = every switch);
  by default every component but the device's housekeeping (HOUSEKEEPING: `sys` uptime/RAM/file system,
  `wifi` RSSI, connection states, scripts' memory), which is no energy data.
"""

from __future__ import annotations

import math

from edge_agent.ingest.formats.base import (
    FormatConfigError,
    Ignored,
    Points,
    Reject,
    decode_json,
    decode_text,
    object_fields,
    parse_time,
    static_tags,
)
from shared.points import Point, name_problem

# Component types that describe the device, not the house's energy (Shelly gen2 API: Sys, WiFi, Ethernet,
# BLE, Cloud, MQTT, Outbound Websocket, UI, Script, …). Stored only when a rule lists them in `components`.
HOUSEKEEPING = frozenset({"sys", "wifi", "eth", "ble", "bthome", "cloud", "mqtt", "ws", "ui", "plugs_ui",
                          "matter", "zigbee", "knx", "modbus", "script", "sntp", "wd"})
NOTIFY_VALUES = ("NotifyStatus", "NotifyFullStatus")
_ID = frozenset({"id"})


def parse_number(rule, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
    text = decode_text(payload).strip()
    try:
        value = float(text)
    except ValueError:
        raise Reject("wrong_type", f"payload {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise Reject("not_finite", f"payload is {text[:40]!r}")
    field = rule.field or named.get("field") or "value"
    measurement = rule.measurement or named.get("measurement") or "mqtt"
    return [Point(measurement, static_tags(rule, named), {field: value}, received_ns)]


def component_fields(obj: dict, where: str = "", skipped: list | None = None) -> dict[str, float]:
    """Numbers of a Shelly gen2 component object; nested objects (e.g. `aenergy`) flattened with `_`; `id`,
    strings and booleans (`errors`, `output`) are status, not measurements."""
    return object_fields(obj, where, False, skipped if skipped is not None else [], _ID)


def compile_shelly_gen2(rule):
    wanted = _component_filter(rule.components)
    measurement = rule.measurement or "shelly"

    def parse(named: dict[str, str], payload: bytes, received_ns: int) -> Points:
        doc = decode_json(payload)
        if not isinstance(doc, dict):
            raise Reject("wrong_type", "payload must be a JSON object")
        tags = static_tags(rule, named)
        time_ns = received_ns
        method = doc.get("method")
        if method in NOTIFY_VALUES or (method is None and "params" in doc):
            params = doc.get("params")
            if not isinstance(params, dict):
                raise Reject("missing_field", f"{method or 'notification'} without params")
            if "src" in doc and isinstance(doc["src"], str):
                tags.setdefault("device", doc["src"])
            if "ts" in params:
                time_ns = parse_time(params["ts"])
            present = [k for k, v in params.items() if isinstance(v, dict)]
            components = {k: params[k] for k in present if wanted(k)}
            what = method or "notification"
        elif method == "NotifyEvent":
            kinds = _events(doc.get("params"))
            raise Ignored(f"NotifyEvent ({kinds or 'no events'}): events, not values (the energy comes with "
                          "NotifyStatus and the status topics)")
        elif method is not None:
            raise Reject("wrong_type", f"method {str(method)[:40]!r} is none of NotifyStatus, NotifyFullStatus, "
                                       "NotifyEvent")
        else:
            component = named.get("component") or rule.field or "status"
            if not wanted(component):
                raise Ignored(f"component {component[:40]} is not in the rule's components"
                              if rule.components else f"component {component[:40]} is the device's housekeeping "
                                                      "(list it in the rule's components to store it)")
            components = {component: doc}
            present = [component]
            what = "status"
        points = Points()
        skipped: list[tuple[str, str]] = []
        for name, obj in components.items():
            fields = component_fields(obj, name, skipped)
            if fields:
                points.append(Point(measurement, {**tags, "component": name}, fields, time_ns))
        if not points:
            if skipped:
                raise Reject("missing_field", f"only numbers sent as text: {', '.join(p for p, _ in skipped[:5])}")
            names = ", ".join(str(k)[:40] for k in present[:5]) or "no component"
            raise Ignored(f"{what} without values to store ({names}): a state change or the device's "
                          "housekeeping")
        return points.with_skipped(skipped)

    return parse


def _events(params: object) -> str:
    """`emdata:0 data, input:0 single_push` — what a NotifyEvent reports, for `rules test` and the sniffer."""
    events = params.get("events") if isinstance(params, dict) else None
    if not isinstance(events, list):
        return ""
    out = [f"{e.get('component', '?')} {e.get('event', '?')}" for e in events[:3] if isinstance(e, dict)]
    return ", ".join(str(x)[:60] for x in out)


def _component_filter(components: object):
    """`components` → a predicate on a component name (`em:0`); a bare type (`switch`) takes every instance."""
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        raise FormatConfigError("components", "must be a list of component names such as \"em:0\" or types "
                                              "such as \"switch\"")
    for i, c in enumerate(components):
        if problem := name_problem(c, "component"):
            raise FormatConfigError(f"components[{i}]", problem)
    if not components:
        return lambda name: name.partition(":")[0] not in HOUSEKEEPING
    names = frozenset(components)
    return lambda name: name in names or name.partition(":")[0] in names

