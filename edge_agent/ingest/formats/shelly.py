"""Plain numbers (`number`, `shelly_gen1`) and Shelly gen2/gen3 JSON (`shelly_gen2`).

- `number`/`shelly_gen1`: the payload is one number as text; the field is the rule's `field` or the topic's
  `+field` level (Shelly gen1: `shellies/<id>/emeter/<n>/power`, `…/relay/<n>/energy`).
- `shelly_gen2`: `<id>/status/<component>` JSON (the component's numbers, nested objects such as `aenergy`
  flattened with `_`) or `<id>/events/rpc` `NotifyStatus` (every component object in `params`, time `params.ts`);
  tag `component`.
"""

from __future__ import annotations

import math

from edge_agent.ingest.formats.base import (
    Reject,
    decode_json,
    decode_text,
    number,
    numeric_leaves,
    parse_time,
    static_tags,
)
from shared.points import Point


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


def component_fields(obj: dict) -> dict[str, float]:
    """Numbers of a Shelly gen2 component object; nested objects (e.g. `aenergy`) flattened with `_`; `id`,
    strings and booleans (`errors`, `output`) are status, not measurements."""
    return {name: number(value, path) for path, name, value in numeric_leaves(obj) if path != "id"}


def parse_shelly_gen2(rule, named: dict[str, str], payload: bytes, received_ns: int) -> list[Point]:
    doc = decode_json(payload)
    if not isinstance(doc, dict):
        raise Reject("wrong_type", "payload must be a JSON object")
    measurement = rule.measurement or "shelly"
    tags = static_tags(rule, named)
    time_ns = received_ns
    if doc.get("method") == "NotifyStatus" or "params" in doc:
        params = doc.get("params")
        if not isinstance(params, dict):
            raise Reject("missing_field", "NotifyStatus without params")
        if "src" in doc and isinstance(doc["src"], str):
            tags.setdefault("device", doc["src"])
        if "ts" in params:
            time_ns = parse_time(params["ts"])
        components = {k: v for k, v in params.items() if isinstance(v, dict)}
    else:
        component = named.get("component") or rule.field or "status"
        components = {component: doc}
    points = []
    for name, obj in components.items():
        fields = component_fields(obj)
        if fields:
            points.append(Point(measurement, {**tags, "component": name}, fields, time_ns))
    if not points:
        raise Reject("missing_field", "no numeric values in the status")
    return points
