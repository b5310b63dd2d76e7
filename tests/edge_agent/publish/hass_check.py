"""Run inside the Home Assistant venv (.venv-hass): judge discovery configs with Home Assistant's own code.

Reads JSON on stdin: {"discovery_prefix": str, "configs": [[topic, payload], ...],
"samples": {state_topic: [payload, ...]}}. Writes JSON on stdout, one entry per config, with what Home Assistant
makes of it: whether its discovery topic matcher accepts the topic, the errors of the MQTT sensor schema (strict
YAML schema and the discovery schema), keys discovery would silently drop, deprecated keys, whether the recorder
would keep long-term statistics, whether the Energy dashboard accepts its unit/device class, and the value and
attribute templates rendered by HA's template engine for every sample payload on its state topic.
Pytest (tests/edge_agent/publish/test_hass.py) makes the assertions; this file only reports.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile

import voluptuous as vol
from homeassistant.components.energy import validate as energy_validate
from homeassistant.components.mqtt import discovery
from homeassistant.components.mqtt.models import MqttValueTemplate
from homeassistant.components.mqtt.sensor import DISCOVERY_SCHEMA, PLATFORM_SCHEMA_MODERN
from homeassistant.components.sensor import SensorStateClass
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


def judge(hass, prefix: str, topic: str, payload: str, samples: dict[str, list[str]]) -> dict:
    out: dict = {"topic": topic, "topic_ok": False}
    if topic.startswith(prefix + "/"):
        out["topic_ok"] = discovery.TOPIC_MATCHER.match(topic[len(prefix) + 1:]) is not None
    if payload == "":
        out["delete"] = True
        return out
    cfg = json.loads(payload)
    platform_schema, discovery_schema = PLATFORM_SCHEMA_MODERN, DISCOVERY_SCHEMA
    if "/binary_sensor/" in topic:  # the problem sensor (hass.problem_discovery)
        from homeassistant.components.mqtt import binary_sensor

        platform_schema, discovery_schema = binary_sensor.PLATFORM_SCHEMA_MODERN, binary_sensor.DISCOVERY_SCHEMA
    out["strict_error"] = _error(platform_schema, cfg)
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
    out["rendered"] = [{"value": _render(hass, cfg.get("value_template"), p),
                        "attributes": _render(hass, cfg.get("json_attributes_template"), p)}
                       for p in samples.get(cfg.get("state_topic"), [])]
    return out


async def main() -> None:
    doc = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        await hass.config.async_set_time_zone("UTC")
        results = [judge(hass, doc["discovery_prefix"], topic, payload, doc.get("samples", {}))
                   for topic, payload in doc["configs"]]
        await hass.async_stop(force=True)
    json.dump({"ha_version": HA_VERSION, "results": results}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
