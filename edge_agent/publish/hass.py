"""Home Assistant MQTT discovery: the config payloads for the agent's sensors (pure functions, no MQTT I/O).

The agent publishes every `(topic, payload)` pair these functions return **retained** (QoS 1). An empty payload
means "delete": Home Assistant removes the entity and the broker drops the retained config (used for the sensors
of a role the house no longer has). Checked against Home Assistant's own MQTT sensor schema by
tests/edge_agent/publish/test_hass.py (docs/home-assistant.md).

Why each choice:
- Every config names the availability topic `<prefix>/status` ("online"/"offline", retained; the agent's last will
  publishes "offline"), so a stopped agent shows as unavailable instead of its last retained values.
- Every config has `expire_after`: a running agent whose forecast or flow stalled goes unavailable too; forecast
  templates also answer "None" (HA: unknown) for a payload issued longer ago than that, because a retained old
  forecast re-arrives, and restarts the expiry timer, whenever Home Assistant (re)subscribes.
- Forecasts have no `state_class`: a forecast is not a meter, and a state class would make Home Assistant build
  long-term statistics from it and offer it as an Energy-dashboard source.
- The flow's running totals are `device_class: energy`, `state_class: total_increasing`, kWh: what the Energy
  dashboard accepts for grid, solar and battery.
- `default_entity_id` replaces `object_id` (deprecated in HA 2025.10, removed in 2026.4). Unique ids are those of
  the earlier `forecast.py` configs, so existing entities are updated in place.
"""

from __future__ import annotations

import json
import re

DISCOVERY_PREFIX = "homeassistant"
ONLINE, OFFLINE = "online", "offline"
SLOT_SECONDS = 900
# Two missed 15-minute cycles (a forecast or slot 30 minutes old) make a sensor unavailable.
DEFAULT_EXPIRE_AFTER_S = 2 * SLOT_SECONDS
ROLES = ("grid", "pv", "battery")  # the flow's device roles that decide which sensors exist

_NODE_RE = re.compile(r"^[a-zA-Z0-9_-]+$")  # what HA's discovery topic matcher accepts as node_id


def availability_topic(prefix: str) -> str:
    """Where the agent publishes "online" (retained) and its last will "offline"."""
    return f"{prefix}/status"


def forecast_topic(prefix: str, horizon: int | str) -> str:
    return f"{prefix}/forecast/best/{horizon}"


def skill_topic(prefix: str, horizon: int | str) -> str:
    return f"{prefix}/forecast/skill/{horizon}"


def flow_totals_topic(prefix: str) -> str:
    return f"{prefix}/flow/totals"


def flow_slot_topic(prefix: str) -> str:
    return f"{prefix}/flow/slot"


def config_topic(discovery_prefix: str, node_id: str, key: str) -> str:
    return f"{discovery_prefix}/sensor/{node_id}/{key}/config"


def _check_node(node_id: str) -> None:
    if not _NODE_RE.match(node_id):
        raise ValueError(f"node_id {node_id!r}: Home Assistant discovery allows only letters, digits, _ and - "
                         "(config key [forecast].node_id)")


def device(node_id: str) -> dict:
    return {"identifiers": [f"home-energy-{node_id}"], "name": f"Home energy ({node_id})",
            "manufacturer": "home-energy", "model": "edge agent"}


def _entity_id(node_id: str, key: str) -> str:
    return "sensor." + re.sub(r"[^a-z0-9_]+", "_", f"{node_id}_{key}".lower()).strip("_")


def _base(node_id: str, prefix: str, key: str, name: str, state_topic: str, value_template: str,
          expire_after_s: int) -> dict:
    return {"name": name, "unique_id": f"{node_id}_{key}", "default_entity_id": _entity_id(node_id, key),
            "state_topic": state_topic, "value_template": value_template,
            "availability_topic": availability_topic(prefix), "payload_available": ONLINE,
            "payload_not_available": OFFLINE, "expire_after": expire_after_s,
            "device": device(node_id), "origin": {"name": "home-energy"}}


def _fresh(expr: str, max_age_s: int) -> str:
    """A value template that renders `expr`, or None (unknown) when the payload's issued_at is too old."""
    return (f"{{% if as_timestamp(value_json.issued_at, 0) > as_timestamp(now()) - {max_age_s} %}}"
            f"{{{{ {expr} }}}}{{% else %}}None{{% endif %}}")


FORECAST_ATTRIBUTES = ("issued_at", "model", "version", "fallback_reason", "input_complete",
                       "next_p10_kwh", "next_p90_kwh")  # the band of the next slot (None without one)
FORECAST_SENSORS = (  # key (unique id and topic part, unchanged since the first release), name, horizon, value
    ("consumption_next_15min", "Consumption next 15 min", 1, "value_json.next_kwh"),
    ("consumption_next_24h", "Consumption next 24 h", 96, "value_json.total_kwh"),
)


def forecast_discovery(node_id: str, prefix: str, discovery_prefix: str = DISCOVERY_PREFIX,
                       expire_after_s: int = DEFAULT_EXPIRE_AFTER_S) -> list[tuple[str, str]]:
    """Configs for the forecast sensors reading `<prefix>/forecast/best/<horizon>` (kWh, no state class)."""
    _check_node(node_id)
    attrs = ", ".join(f"'{a}': value_json.get('{a}')" for a in FORECAST_ATTRIBUTES)
    out = []
    for key, name, horizon, expr in FORECAST_SENSORS:
        topic = forecast_topic(prefix, horizon)
        cfg = _base(node_id, prefix, key, name, topic, _fresh(expr, expire_after_s), expire_after_s)
        cfg |= {"unit_of_measurement": "kWh", "device_class": "energy", "suggested_display_precision": 3,
                "icon": "mdi:chart-bell-curve-cumulative", "json_attributes_topic": topic,
                "json_attributes_template": f"{{{{ {{{attrs}}} | tojson }}}}"}
        out.append((config_topic(discovery_prefix, node_id, key), json.dumps(cfg)))
    return out


SKILL_ATTRIBUTES = ("issued_at", "name", "model", "version", "slots", "window", "skill_1d", "skill_30d", "mae_kwh",
                    "baseline", "baseline_mae_kwh", "state", "guard_reason")
SKILL_SENSORS = (  # key, name, horizon
    ("forecast_skill_next_15min", "Forecast skill next 15 min", 1),
    ("forecast_skill_day_ahead", "Forecast skill day ahead", 96),
)


def skill_discovery(node_id: str, prefix: str, discovery_prefix: str = DISCOVERY_PREFIX,
                    expire_after_s: int = DEFAULT_EXPIRE_AFTER_S) -> list[tuple[str, str]]:
    """Configs for the live-skill sensors reading `<prefix>/forecast/skill/<horizon>`: the preferred model's skill
    over 7 days in % (1 − MAE / MAE of the best naive baseline on the same slots; unknown until scored), with
    model, version, slots scored and the guard's verdict as attributes. A measurement (`state_class`), so Home
    Assistant keeps its history as statistics; no device class (a skill is no physical quantity)."""
    _check_node(node_id)
    attrs = ", ".join(f"'{a}': value_json.get('{a}')" for a in SKILL_ATTRIBUTES)
    value = "(value_json.skill * 100) | round(1) if value_json.get('skill') is number else None"
    out = []
    for key, name, horizon in SKILL_SENSORS:
        topic = skill_topic(prefix, horizon)
        cfg = _base(node_id, prefix, key, name, topic, _fresh(value, expire_after_s), expire_after_s)
        cfg |= {"unit_of_measurement": "%", "state_class": "measurement", "suggested_display_precision": 1,
                "icon": "mdi:bullseye-arrow", "json_attributes_topic": topic,
                "json_attributes_template": f"{{{{ {{{attrs}}} | tojson }}}}"}
        out.append((config_topic(discovery_prefix, node_id, key), json.dumps(cfg)))
    return out


# key, name, the totals field, the role it needs (None: always)
TOTAL_SENSORS = (
    ("grid_import_total", "Grid import", "grid_import_kwh", "grid"),
    ("grid_export_total", "Grid export", "grid_export_kwh", "grid"),
    ("pv_total", "PV production", "pv_kwh", "pv"),
    ("battery_charge_total", "Battery charge", "battery_charge_kwh", "battery"),
    ("battery_discharge_total", "Battery discharge", "battery_discharge_kwh", "battery"),
    ("house_total", "House consumption", "house_kwh", None),
    ("self_supplied_total", "Self-supplied energy", "self_supplied_kwh", "pv"),
)
# key, name, the slot's ratio field (0..1, shown in %), the role it needs
SLOT_SENSORS = (
    ("autarky_slot", "Autarky (last 15 min)", "autarky", None),
    ("self_consumption_slot", "Self-consumption (last 15 min)", "self_consumption", "pv"),
)


def flow_discovery(node_id: str, prefix: str, discovery_prefix: str = DISCOVERY_PREFIX,
                   roles_present: set[str] | frozenset[str] = frozenset(ROLES),
                   expire_after_s: int = DEFAULT_EXPIRE_AFTER_S) -> list[tuple[str, str]]:
    """Configs for the energy flow's counters (Energy-dashboard sources) and the newest slot's ratios.

    `roles_present`: the flow's configured roles (grid, pv, battery; consumer is ignored). The sensors of a
    missing role get an empty payload, which deletes an entity an earlier configuration created.
    """
    _check_node(node_id)
    unknown = set(roles_present) - {*ROLES, "consumer"}
    if unknown:
        raise ValueError(f"roles_present: unknown role(s) {sorted(unknown)} (known: {', '.join(ROLES)}, consumer)")
    out = []
    totals = flow_totals_topic(prefix)
    for key, name, field, role in TOTAL_SENSORS:
        topic = config_topic(discovery_prefix, node_id, key)
        if role is not None and role not in roles_present:
            out.append((topic, ""))
            continue
        cfg = _base(node_id, prefix, key, name, totals, f"{{{{ value_json.{field} }}}}", expire_after_s)
        cfg |= {"unit_of_measurement": "kWh", "device_class": "energy", "state_class": "total_increasing",
                "suggested_display_precision": 2, "json_attributes_topic": totals,
                "json_attributes_template": "{{ {'last_slot': value_json.get('last_slot')} | tojson }}"}
        out.append((topic, json.dumps(cfg)))
    slot = flow_slot_topic(prefix)
    for key, name, field, role in SLOT_SENSORS:
        topic = config_topic(discovery_prefix, node_id, key)
        if role is not None and role not in roles_present:
            out.append((topic, ""))
            continue
        value = (f"{{% if value_json.get('{field}') is number %}}{{{{ (value_json.{field} * 100) | round(1) }}}}"
                 "{% else %}None{% endif %}")  # 0/0 (no PV, no consumption) -> unknown, not 0 %
        cfg = _base(node_id, prefix, key, name, slot, value, expire_after_s)
        cfg |= {"unit_of_measurement": "%", "state_class": "measurement", "suggested_display_precision": 1,
                "icon": "mdi:home-lightning-bolt-outline", "json_attributes_topic": slot,
                "json_attributes_template": "{{ {'slot_end': value_json.get('slot_end')} | tojson }}"}
        out.append((topic, json.dumps(cfg)))
    return out


def health_topic(prefix: str) -> str:
    """The agent's health values (JSON, retained), published every `health.interval_s`."""
    return f"{prefix}/agent/health"


# key, name, the health value, unit, how the value is shown (a Jinja expression of `v`), device class
HEALTH_SENSORS = (
    ("disk_writes_per_day", "Disk writes per day", "bytes_written_per_day", "MB", "(v / 1000000) | round(1)",
     "data_size"),
)


def health_discovery(node_id: str, prefix: str, discovery_prefix: str = DISCOVERY_PREFIX,
                     interval_s: float = 60.0) -> list[tuple[str, str]]:
    """Configs for the agent's own health sensors reading `<prefix>/agent/health`: its disk writes per day (the
    SD card's wear, docs/pi.md has the budget), a diagnostic measurement; unknown until the agent has a minute
    of figures. Unavailable after three missed health intervals."""
    _check_node(node_id)
    expire = max(int(3 * interval_s), 60)
    topic = health_topic(prefix)
    out = []
    for key, name, field, unit, shown, device_class in HEALTH_SENSORS:
        value = (f"{{% if value_json.get('{field}') is number %}}{{% set v = value_json.{field} %}}"
                 f"{{{{ {shown} }}}}{{% else %}}None{{% endif %}}")
        cfg = _base(node_id, prefix, key, name, topic, value, expire)
        cfg |= {"unit_of_measurement": unit, "device_class": device_class, "state_class": "measurement",
                "entity_category": "diagnostic", "suggested_display_precision": 1, "icon": "mdi:sd"}
        out.append((config_topic(discovery_prefix, node_id, key), json.dumps(cfg)))
    return out
