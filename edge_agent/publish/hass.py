"""Home Assistant MQTT discovery: the agent's entities as one device-based config (pure functions, no MQTT I/O).

Home Assistant's current form (2024.11+): one retained message on `<discovery_prefix>/device/<node_id>/config`
holding the device (`dev`), the origin (`o`: name, version, support URL), what all entities share (the
availability topic) and every entity under `cmps` (`p` = its platform). Each part of the agent contributes its
entities as a dict `key → component config` (`*_components` below, the away switch in forecast/away.py, the cost
sensors via tariff); edge_agent/publish/discovery.py joins them and publishes, and migrates entities that earlier
releases announced one per topic (`<discovery_prefix>/<platform>/<node_id>/<key>/config`) without losing their
entity ids or history. A component that only says `{"p": "sensor"}` deletes an entity an earlier setup created
(e.g. after removing the battery). Checked with Home Assistant's own code by tests/edge_agent/publish/test_hass.py
(docs/home-assistant.md).

Why each choice:
- Availability (`<prefix>/status`, "online"/"offline", retained; the agent's last will publishes "offline") is
  shared by every entity, so a stopped agent shows as unavailable instead of its last retained values.
- Every sensor has `expire_after`: a running agent whose forecast or flow stalled goes unavailable too; forecast
  templates also answer "None" (HA: unknown) for a payload issued longer ago than that, because a retained old
  forecast re-arrives, and restarts the expiry timer, whenever Home Assistant (re)subscribes.
- Forecasts have no `state_class`: a forecast is not a meter, and a state class would make Home Assistant build
  long-term statistics from it and offer it as an Energy-dashboard source.
- The flow's running totals are `device_class: energy`, `state_class: total_increasing`, kWh: what the Energy
  dashboard accepts for grid, solar and battery. Grid export, autarky and self-supplied energy exist only with PV
  or a battery (a grid-only house showed "Grid export" 0 kWh and "Autarky" 0 % forever).
- `default_entity_id` replaces `object_id` (deprecated in HA 2025.10, removed in 2026.4). Unique ids are those of
  the first release, so existing entities are updated in place.
"""

from __future__ import annotations

import json
import re

DISCOVERY_PREFIX = "homeassistant"
ONLINE, OFFLINE = "online", "offline"
SLOT_SECONDS = 900
# Two missed 15-minute cycles (a forecast or slot 30 minutes old) make a sensor unavailable.
DEFAULT_EXPIRE_AFTER_S = 2 * SLOT_SECONDS
POWER_EXPIRE_AFTER_S = 600  # power readings come every few seconds: ten minutes without one is unknown
ROLES = ("grid", "pv", "battery")  # the flow's device roles that decide which sensors exist
SUPPORT_URL = "https://github.com/home-energy/home-energy"

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


def flow_power_topic(prefix: str) -> str:
    return f"{prefix}/flow/power"


def device_topic(discovery_prefix: str, node_id: str) -> str:
    """The one device-based discovery config of the agent."""
    return f"{discovery_prefix}/device/{node_id}/config"


def legacy_topic(discovery_prefix: str, platform: str, node_id: str, key: str) -> str:
    """Where releases before device-based discovery announced the entity `key` (one config per entity)."""
    return f"{discovery_prefix}/{platform}/{node_id}/{key}/config"


def check_node(node_id: str) -> None:
    if not _NODE_RE.match(node_id):
        raise ValueError(f"node_id {node_id!r}: Home Assistant discovery allows only letters, digits, _ and - "
                         "(config key [publish].node_id)")


def device(node_id: str) -> dict:
    return {"identifiers": [f"home-energy-{node_id}"], "name": f"Home energy ({node_id})",
            "manufacturer": "home-energy", "model": "edge agent"}


def origin() -> dict:
    from edge_agent import __version__

    return {"name": "home-energy", "sw": __version__, "url": SUPPORT_URL}


def _entity_id(platform: str, node_id: str, key: str) -> str:
    return f"{platform}." + re.sub(r"[^a-z0-9_]+", "_", f"{node_id}_{key}".lower()).strip("_")


def component(platform: str, node_id: str, key: str, name: str, **cfg) -> dict:
    """One entity of the device config (availability, device and origin come from the device config)."""
    return {"p": platform, "name": name, "unique_id": f"{node_id}_{key}",
            "default_entity_id": _entity_id(platform, node_id, key), **cfg}


def removed(platform: str = "sensor") -> dict:
    """A component that deletes the entity an earlier configuration created."""
    return {"p": platform}


def sensor(node_id: str, key: str, name: str, state_topic: str, value_template: str, expire_after_s: int,
           **extra) -> dict:
    return component("sensor", node_id, key, name, state_topic=state_topic, value_template=value_template,
                     expire_after=expire_after_s, **extra)


def _fresh(expr: str, max_age_s: int, key: str = "issued_at") -> str:
    """A value template that renders `expr`, or None (unknown) when the payload's `key` time is too old."""
    return (f"{{% if as_timestamp(value_json.{key}, 0) > as_timestamp(now()) - {max_age_s} %}}"
            f"{{{{ {expr} }}}}{{% else %}}None{{% endif %}}")


def _attributes(names: tuple[str, ...]) -> str:
    attrs = ", ".join(f"'{a}': value_json.get('{a}')" for a in names)
    return f"{{{{ {{{attrs}}} | tojson }}}}"


# -- forecasts --------------------------------------------------------------------------------------------------
NEXT_15MIN_ATTRIBUTES = ("issued_at", "model", "version", "fallback_reason", "input_complete",
                         "next_p10_kwh", "next_p90_kwh")  # the band of the next slot (None without one)
# The 24 h total has no band: P10/P90 of single slots do not add up to those of a sum (errors partly cancel). Its
# attributes hold the 96 values and their per-slot band for forecast cards (first_target = the first slot's end).
NEXT_24H_ATTRIBUTES = ("issued_at", "model", "version", "fallback_reason", "input_complete", "first_target",
                       "values", "p10", "p90")
FORECAST_SENSORS = (  # key (unique id, unchanged since the first release), name, horizon, value, attributes
    ("consumption_next_15min", "Consumption next 15 min", 1, "value_json.next_kwh", NEXT_15MIN_ATTRIBUTES),
    ("consumption_next_24h", "Consumption next 24 h", 96, "value_json.total_kwh", NEXT_24H_ATTRIBUTES),
)


def forecast_components(node_id: str, prefix: str, expire_after_s: int = DEFAULT_EXPIRE_AFTER_S) -> dict[str, dict]:
    """The forecast sensors reading `<prefix>/forecast/best/<horizon>` (kWh, no state class)."""
    check_node(node_id)
    out = {}
    for key, name, horizon, expr, attributes in FORECAST_SENSORS:
        topic = forecast_topic(prefix, horizon)
        out[key] = sensor(node_id, key, name, topic, _fresh(expr, expire_after_s), expire_after_s,
                          unit_of_measurement="kWh", device_class="energy", suggested_display_precision=3,
                          icon="mdi:chart-bell-curve-cumulative", json_attributes_topic=topic,
                          json_attributes_template=_attributes(attributes))
    return out


SKILL_ATTRIBUTES = ("issued_at", "name", "model", "version", "slots", "window", "skill_1d", "skill_30d", "mae_kwh",
                    "baseline", "baseline_mae_kwh", "state", "guard_reason", "summary")
SKILL_SENSORS = (  # key, name, horizon
    ("forecast_skill_next_15min", "Forecast skill next 15 min", 1),
    ("forecast_skill_day_ahead", "Forecast skill day ahead", 96),
)


def skill_components(node_id: str, prefix: str, expire_after_s: int = DEFAULT_EXPIRE_AFTER_S) -> dict[str, dict]:
    """The live-skill sensors reading `<prefix>/forecast/skill/<horizon>`: the preferred model's skill over 7 days
    in % (1 − MAE / MAE of the best naive baseline on the same slots; unknown until scored), with model, version,
    slots scored and the guard's verdict as attributes. A measurement (`state_class`), so Home Assistant keeps its
    history as statistics; no device class (a skill is no physical quantity)."""
    check_node(node_id)
    value = "(value_json.skill * 100) | round(1) if value_json.get('skill') is number else None"
    out = {}
    for key, name, horizon in SKILL_SENSORS:
        topic = skill_topic(prefix, horizon)
        out[key] = sensor(node_id, key, name, topic, _fresh(value, expire_after_s), expire_after_s,
                          unit_of_measurement="%", state_class="measurement", suggested_display_precision=1,
                          icon="mdi:bullseye-arrow", json_attributes_topic=topic,
                          json_attributes_template=_attributes(SKILL_ATTRIBUTES))
    return out


# -- the energy flow --------------------------------------------------------------------------------------------
# key, name, the totals field, the roles of which one must exist (None: always)
TOTAL_SENSORS = (
    ("grid_import_total", "Grid import", "grid_import_kwh", ("grid",)),
    ("grid_export_total", "Grid export", "grid_export_kwh", ("pv", "battery")),
    ("pv_total", "PV production", "pv_kwh", ("pv",)),
    ("battery_charge_total", "Battery charge", "battery_charge_kwh", ("battery",)),
    ("battery_discharge_total", "Battery discharge", "battery_discharge_kwh", ("battery",)),
    ("house_total", "House consumption", "house_kwh", None),
    ("self_supplied_total", "Self-supplied energy", "self_supplied_kwh", ("pv",)),
)
# key, name, the slot's ratio field (0..1, shown in %), the roles of which one must exist
SLOT_SENSORS = (
    ("autarky_slot", "Autarky (last 15 min)", "autarky", ("pv", "battery")),
    ("self_consumption_slot", "Self-consumption (last 15 min)", "self_consumption", ("pv",)),
)
# key, name, the power payload's field (W), the role (a device of it must report power)
POWER_SENSORS = (
    ("grid_power", "Grid power", "grid_w", "grid"),
    ("pv_power", "PV power", "pv_w", "pv"),
    ("battery_power", "Battery power", "battery_w", "battery"),
    ("house_power", "House power", "house_w", "house"),
)


def flow_components(node_id: str, prefix: str, roles_present: set[str] | frozenset[str] = frozenset(ROLES),
                    power_roles: set[str] | frozenset[str] = frozenset(),
                    expire_after_s: int = DEFAULT_EXPIRE_AFTER_S) -> dict[str, dict]:
    """The energy flow's counters (Energy-dashboard sources), the newest slot's ratios and the power sensors.

    `roles_present`: the flow's configured roles (grid, pv, battery; consumer is ignored). `power_roles`: the roles
    with a device that reports power (`power_field`), plus `house` when every role's power is known. Sensors of a
    missing role are `removed()`, which deletes an entity an earlier configuration created.
    """
    check_node(node_id)
    unknown = set(roles_present) - {*ROLES, "consumer"}
    if unknown:
        raise ValueError(f"roles_present: unknown role(s) {sorted(unknown)} (known: {', '.join(ROLES)}, consumer)")
    has = lambda roles: roles is None or any(r in roles_present for r in roles)  # noqa: E731
    out: dict[str, dict] = {}
    totals = flow_totals_topic(prefix)
    for key, name, field, roles in TOTAL_SENSORS:
        out[key] = removed() if not has(roles) else sensor(
            node_id, key, name, totals, f"{{{{ value_json.{field} }}}}", expire_after_s, unit_of_measurement="kWh",
            device_class="energy", state_class="total_increasing", suggested_display_precision=2,
            json_attributes_topic=totals,
            json_attributes_template="{{ {'last_slot': value_json.get('last_slot')} | tojson }}")
    slot = flow_slot_topic(prefix)
    for key, name, field, roles in SLOT_SENSORS:
        value = (f"{{% if value_json.get('{field}') is number %}}{{{{ (value_json.{field} * 100) | round(1) }}}}"
                 "{% else %}None{% endif %}")  # 0/0 (no PV, no consumption) -> unknown, not 0 %
        out[key] = removed() if not has(roles) else sensor(
            node_id, key, name, slot, value, expire_after_s, unit_of_measurement="%", state_class="measurement",
            suggested_display_precision=1, icon="mdi:home-lightning-bolt-outline", json_attributes_topic=slot,
            json_attributes_template="{{ {'slot_end': value_json.get('slot_end')} | tojson }}")
    power = flow_power_topic(prefix)
    for key, name, field, role in POWER_SENSORS:
        value = f"value_json.{field} if value_json.get('{field}') is number else None"
        out[key] = removed() if role not in power_roles else sensor(
            node_id, key, name, power, _fresh(value, POWER_EXPIRE_AFTER_S, "time"), POWER_EXPIRE_AFTER_S,
            unit_of_measurement="W", device_class="power", state_class="measurement", suggested_display_precision=0)
    return out


# -- what it costs ----------------------------------------------------------------------------------------------
def cost_components(node_id: str, prefix: str, currency: str, cost_topic: str, forecast_cost_topic: str,
                    expire_after_s: int = DEFAULT_EXPIRE_AFTER_S) -> dict[str, dict]:
    """Cost today / yesterday (the sums of the slots' cost, the house's local days), the forecast cost of the next
    24 h and the price now. Costs are `monetary` in the tariff's currency: "cost today" a `total` that resets at
    local midnight (`last_reset`), so Home Assistant's statistics sum it per day; yesterday and the forecast are
    plain values. The price (currency/kWh) is what the Energy dashboard takes as "entity with current price"."""
    check_node(node_id)
    number = "value_json.{0} if value_json.get('{0}') is number else None"
    return {
        "cost_today": sensor(node_id, "cost_today", "Cost today", cost_topic, f"{{{{ {number.format('today')} }}}}",
                             expire_after_s, unit_of_measurement=currency, device_class="monetary",
                             state_class="total", last_reset_value_template="{{ value_json.last_reset }}",
                             suggested_display_precision=2, json_attributes_topic=cost_topic,
                             json_attributes_template=_attributes(("day", "today_slots", "updated"))),
        "cost_yesterday": sensor(node_id, "cost_yesterday", "Cost yesterday", cost_topic,
                                 f"{{{{ {number.format('yesterday')} }}}}", expire_after_s,
                                 unit_of_measurement=currency, device_class="monetary",
                                 suggested_display_precision=2, json_attributes_topic=cost_topic,
                                 json_attributes_template=_attributes(("yesterday_slots",))),
        "forecast_cost_next_24h": sensor(
            node_id, "forecast_cost_next_24h", "Forecast cost next 24 h", forecast_cost_topic,
            _fresh(number.format("cost_next_24h"), expire_after_s), expire_after_s, unit_of_measurement=currency,
            device_class="monetary", suggested_display_precision=2, json_attributes_topic=forecast_cost_topic,
            json_attributes_template=_attributes(("issued_at", "priced_slots", "slots", "priced_until",
                                                  "cost_priced_slots", "energy_kwh"))),
        "electricity_price": sensor(node_id, "electricity_price", "Electricity price", cost_topic,
                                    f"{{{{ {number.format('price_now')} }}}}", expire_after_s,
                                    unit_of_measurement=f"{currency}/kWh", state_class="measurement",
                                    suggested_display_precision=4, icon="mdi:cash",
                                    json_attributes_topic=cost_topic,
                                    json_attributes_template=_attributes(("feed_in_price",))),
    }


# -- the device config -----------------------------------------------------------------------------------------
def device_config(node_id: str, prefix: str, components: dict[str, dict],
                  discovery_prefix: str = DISCOVERY_PREFIX) -> tuple[str, str]:
    """The retained device-based discovery message: (topic, payload)."""
    check_node(node_id)
    doc = {"dev": device(node_id), "o": origin(), "availability_topic": availability_topic(prefix),
           "payload_available": ONLINE, "payload_not_available": OFFLINE, "qos": 1, "cmps": components}
    return device_topic(discovery_prefix, node_id), json.dumps(doc)


def migration(node_id: str, components: dict[str, dict], discovery_prefix: str = DISCOVERY_PREFIX
              ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Moving entities from one config per topic to the device config without losing their ids and history
    (Home Assistant's documented migration): before the device config, `{"migrate_discovery": true}` on each old
    topic (HA unloads the entity and keeps its registry entry); after it, an empty retained payload clears the old
    topic. Returns (before, after) message lists; publish `before` not retained, `after` retained."""
    topics = [legacy_topic(discovery_prefix, cfg["p"], node_id, key) for key, cfg in components.items()]
    return [(t, json.dumps({"migrate_discovery": True})) for t in topics], [(t, "") for t in topics]


# -- what needs attention (edge_agent/runtime/problems.py) -------------------------------------------------------
def problem_topic(prefix: str) -> str:
    """The agent's problems: {"problem", "reasons", "reason", "checked_at", "last_backup"}, retained."""
    return f"{prefix}/problem"


PROBLEM_ATTRIBUTES = ("reasons", "reason", "checked_at", "last_backup")


def problem_components(node_id: str, prefix: str) -> dict[str, dict]:
    """A `problem` binary sensor (on while anything needs attention; the codes and the text as attributes) and a
    `last_backup` timestamp sensor, both reading `<prefix>/problem`. No expire_after: the agent publishes on
    every change (and every 15 minutes), and a stopped agent is `unavailable` through the availability topic."""
    check_node(node_id)
    topic = problem_topic(prefix)
    attrs = ", ".join(f"'{a}': value_json.get('{a}')" for a in PROBLEM_ATTRIBUTES)
    common = {"state_topic": topic, "json_attributes_topic": topic,
              "json_attributes_template": f"{{{{ {{{attrs}}} | tojson }}}}"}
    return {
        "problem": component("binary_sensor", node_id, "problem", "Problem", device_class="problem",
                             payload_on="ON", payload_off="OFF",
                             value_template="{{ 'ON' if value_json.problem else 'OFF' }}", **common),
        "last_backup": component("sensor", node_id, "last_backup", "Last backup", device_class="timestamp",
                                 icon="mdi:backup-restore", **common,
                                 value_template="{{ value_json.last_backup if value_json.get('last_backup') "
                                                "else None }}"),
    }


def health_topic(prefix: str) -> str:
    """The agent's health values (JSON, retained), published every `health.interval_s`."""
    return f"{prefix}/agent/health"


# key, name, the health value, unit, how the value is shown (a Jinja expression of `v`), device class
HEALTH_SENSORS = (
    ("disk_writes_per_day", "Disk writes per day", "bytes_written_per_day", "MB", "(v / 1000000) | round(1)",
     "data_size"),
)


def health_components(node_id: str, prefix: str, interval_s: float = 60.0) -> dict[str, dict]:
    """The agent's own health sensors reading `<prefix>/agent/health`: its disk writes per day (the SD card's
    wear, docs/pi.md has the budget), a diagnostic measurement; unknown until the agent has a minute of figures.
    Unavailable after three missed health intervals."""
    check_node(node_id)
    expire = max(int(3 * interval_s), 60)
    topic = health_topic(prefix)
    out = {}
    for key, name, field, unit, shown, device_class in HEALTH_SENSORS:
        value = (f"{{% if value_json.get('{field}') is number %}}{{% set v = value_json.{field} %}}"
                 f"{{{{ {shown} }}}}{{% else %}}None{{% endif %}}")
        out[key] = sensor(node_id, key, name, topic, value, expire, unit_of_measurement=unit,
                          device_class=device_class, state_class="measurement", entity_category="diagnostic",
                          suggested_display_precision=1, icon="mdi:sd")
    return out
