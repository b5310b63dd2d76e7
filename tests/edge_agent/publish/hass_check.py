"""Run inside the Home Assistant venv (.venv-hass): judge discovery configs with Home Assistant's own code.

Reads JSON on stdin: {"discovery_prefix": str, "configs": [[topic, payload], ...],
"samples": {state_topic: [payload, ...]}}. A device-based config (`<prefix>/device/<id>/config`) is taken apart as
Home Assistant's discovery does (abbreviations, the device schema, each component with the device, origin and the
shared options merged in): one entry for the device (`device_error`, `components`) and one per component, keyed
`<topic>#<component id>`; a `{"migrate_discovery": true}` payload is judged by HA's migration check
(`migrate_ok`). Writes JSON on stdout, one entry per config or component, with what Home Assistant makes of it: whether its discovery topic matcher accepts the topic, the errors of the MQTT sensor schema (strict
YAML schema and the discovery schema), keys discovery would silently drop, deprecated keys, whether the recorder
would keep long-term statistics, whether the Energy dashboard accepts its unit/device class, and the value and
attribute templates rendered by HA's template engine for every sample payload on its state topic.
Pytest (tests/edge_agent/publish/test_hass.py) makes the assertions; this file only reports.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile

import voluptuous as vol
from homeassistant.components.energy import validate as energy_validate
from homeassistant.components.mqtt import discovery
from homeassistant.components.mqtt.models import MqttValueTemplate
from homeassistant.components.sensor import (
    DEVICE_CLASS_STATE_CLASSES,
    DEVICE_CLASS_UNITS,
    SensorDeviceClass,
    SensorStateClass,
)
from homeassistant.const import __version__ as HA_VERSION  # noqa: N812
from homeassistant.core import HomeAssistant
from homeassistant.helpers import template


def _error(schema, cfg: dict) -> str | None:
    try:
        schema(dict(cfg))
    except vol.Invalid as exc:
        return str(exc)
    return None


def _render(hass, text: str | None, payload: str) -> str | None:
    if text is None:
        return None
    try:
        return str(MqttValueTemplate(template.Template(text, hass)).async_render_with_possible_json_value(payload))
    except Exception as exc:  # noqa: BLE001 - reported, the test decides
        return f"ERROR: {type(exc).__name__}: {exc}"


def _schemas(platform: str):
    module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
    return module.PLATFORM_SCHEMA_MODERN, module.DISCOVERY_SCHEMA


def judge(hass, prefix: str, topic: str, payload: str, samples: dict[str, list[str]]) -> list[dict]:
    out: dict = {"topic": topic, "topic_ok": False}
    match = None
    if topic.startswith(prefix + "/"):
        match = discovery.TOPIC_MATCHER.match(topic[len(prefix) + 1:])
        out["topic_ok"] = match is not None
    if payload == "":
        out["delete"] = True
        return [out]
    if "migrate_discovery" in json.loads(payload):
        out["migrate_ok"] = discovery._async_process_discovery_migration(
            discovery.MQTTDiscoveryPayload(json.loads(payload)))
        return [out]
    platform, _node_id, object_id = match.groups() if match else ("sensor", None, None)
    if platform == "device":
        return judge_device(hass, out, object_id, payload, samples)
    return [judge_component(hass, out, platform, json.loads(payload), samples)]


def judge_device(hass, out: dict, object_id: str, payload: str, samples: dict[str, list[str]]) -> list[dict]:
    """As homeassistant.components.mqtt.discovery does with a device-based config."""
    raw = discovery.MQTTDiscoveryPayload(json.loads(payload))
    discovery._replace_all_abbreviations(raw)
    out["device_error"] = _error(discovery.DEVICE_DISCOVERY_SCHEMA, raw)
    out["components"] = sorted(raw.get("components", {}))
    results = [out]
    if out["device_error"] is not None:
        return results
    for component_id, config in raw["components"].items():
        config = dict(config)
        platform = config.pop("platform")
        entry = {"topic": f"{out['topic']}#{component_id}", "topic_ok": out["topic_ok"], "platform": platform,
                 "discovery_id": f"{object_id} {component_id}"}
        merged = discovery.MQTTDiscoveryPayload(config)
        if not merged:
            entry["delete"] = True
            results.append(entry)
            continue
        merged["device"] = raw["device"]
        merged["origin"] = raw.get("origin")
        discovery._merge_common_device_options(merged, raw)
        results.append(judge_component(hass, entry, platform, dict(merged), samples))
    return results


def judge_component(hass, out: dict, platform: str, cfg: dict, samples: dict[str, list[str]]) -> dict:
    strict, discovery_schema = _schemas(platform)
    out["strict_error"] = _error(strict, cfg)
    out["discovery_error"] = _error(discovery_schema, cfg)
    if out["discovery_error"] is None:
        kept = discovery_schema(dict(cfg))
        out["dropped_keys"] = sorted(set(cfg) - set(kept))
        # entity.py: "object_id ... will stop working in Home Assistant Core 2026.4" (use default_entity_id)
        out["deprecated_keys"] = sorted({"object_id"} & set(kept))
        state_class = kept.get("state_class")
        # sensor/recorder.py _get_sensor_states: statistics only for sensors with a state class
        out["long_term_statistics"] = state_class is not None
        dc, unit = kept.get("device_class"), kept.get("unit_of_measurement")
        # energy/validate.py: usage sources need these device classes and units, and a state class
        out["energy_dashboard_source"] = bool(
            dc in energy_validate.ENERGY_USAGE_DEVICE_CLASSES
            and unit in energy_validate.ENERGY_USAGE_UNITS[dc]
            and state_class in (SensorStateClass.TOTAL, SensorStateClass.TOTAL_INCREASING))
        # energy/validate.py: a price entity's unit ends in /kWh (…); a power source is a measurement in W (…)
        out["energy_price_entity"] = bool(unit and unit.endswith(energy_validate.ENERGY_PRICE_UNITS))
        out["energy_power_source"] = bool(
            dc in energy_validate.POWER_USAGE_UNITS and unit in energy_validate.POWER_USAGE_UNITS[dc]
            and state_class == SensorStateClass.MEASUREMENT)
        # sensor/__init__.py: HA warns about a state class or unit its device class does not allow
        try:
            dc_enum = SensorDeviceClass(dc) if dc else None
        except ValueError:
            dc_enum = None
        allowed_states = DEVICE_CLASS_STATE_CLASSES.get(dc_enum)
        allowed_units = DEVICE_CLASS_UNITS.get(dc_enum)
        out["class_conflicts"] = [what for what, bad in (
            ("state_class", state_class is not None and allowed_states is not None and state_class not in allowed_states),
            ("unit", allowed_units is not None and unit not in allowed_units)) if bad]
    out["rendered"] = [{"value": _render(hass, cfg.get("value_template"), p),
                        "attributes": _render(hass, cfg.get("json_attributes_template"), p)}
                       for p in samples.get(cfg.get("state_topic"), [])]
    return out


async def main() -> None:
    doc = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        await hass.config.async_set_time_zone("UTC")
        results = [r for topic, payload in doc["configs"]
                   for r in judge(hass, doc["discovery_prefix"], topic, payload, doc.get("samples", {}))]
        await hass.async_stop(force=True)
    json.dump({"ha_version": HA_VERSION, "results": results}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
