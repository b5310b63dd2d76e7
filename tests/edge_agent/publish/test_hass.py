"""Home Assistant discovery payloads (edge_agent/hass.py): the rules of issue 18, and Home Assistant's own code
(MQTT sensor schema, discovery topic matcher, template engine, recorder and Energy-dashboard rules) run over every
payload in a separate venv (`make venv-hass`, .venv-hass; tests/edge_models/hass_check.py)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.publish import hass

ROOT = Path(__file__).resolve().parents[3]
HASS_PY = ROOT / ".venv-hass" / "bin" / "python"
NODE, PREFIX, DISC = "testnode", "he-test", "homeassistant"
ALL_ROLES = {"grid", "pv", "battery", "consumer"}

# What forecast.py published until issue 18 (object_id, state_class total, no availability, no expiry).
OLD_FORECAST_CONFIG = {
    "name": "Consumption next 15 min", "unique_id": "testnode_consumption_next_15min",
    "object_id": "testnode_consumption_next_15min", "state_topic": "he-test/forecast/best/1",
    "value_template": "{{ value_json.next_kwh }}", "unit_of_measurement": "kWh", "device_class": "energy",
    "state_class": "total", "json_attributes_topic": "he-test/forecast/best/1",
    "json_attributes_template": "{{ {'issued_at': value_json.issued_at, 'model': value_json.model, "
                                "'version': value_json.version} | tojson }}",
    "device": {"identifiers": ["home-energy-testnode"], "name": "Home energy (testnode)",
               "manufacturer": "home-energy", "model": "edge agent"}}


def configs(roles=frozenset(ALL_ROLES)) -> dict[str, dict | None]:
    pairs = hass.forecast_discovery(NODE, PREFIX, DISC) + hass.skill_discovery(NODE, PREFIX, DISC) \
        + hass.flow_discovery(NODE, PREFIX, DISC, set(roles))
    topics = [t for t, _ in pairs]
    assert len(topics) == len(set(topics))
    return {t: (json.loads(p) if p else None) for t, p in pairs}


def key(topic: str) -> str:
    return topic.split("/")[-2]


def test_every_config_has_availability_and_expiry_and_no_object_id():
    assert hass.availability_topic(PREFIX) == "he-test/status"
    cfgs = configs()
    assert len(cfgs) == 2 + 2 + len(hass.TOTAL_SENSORS) + len(hass.SLOT_SENSORS)
    for topic, cfg in cfgs.items():
        assert topic == f"homeassistant/sensor/testnode/{key(topic)}/config"
        assert cfg["availability_topic"] == "he-test/status"
        assert (cfg["payload_available"], cfg["payload_not_available"]) == ("online", "offline")
        assert cfg["expire_after"] == 1800
        assert "object_id" not in cfg
        assert cfg["default_entity_id"] == f"sensor.testnode_{key(topic)}"
        assert cfg["unique_id"] == f"testnode_{key(topic)}"
        assert cfg["device"]["identifiers"] == ["home-energy-testnode"]


def test_forecasts_are_not_meters_and_keep_their_entities():
    cfgs = configs()
    fc = {key(t): c for t, c in cfgs.items() if "/forecast/best/" in c["state_topic"]}
    assert set(fc) == {"consumption_next_15min", "consumption_next_24h"}  # the unique ids HA already knows
    assert fc["consumption_next_15min"]["state_topic"] == "he-test/forecast/best/1"
    assert fc["consumption_next_24h"]["state_topic"] == "he-test/forecast/best/96"
    for c in fc.values():
        assert "state_class" not in c and "last_reset_value_template" not in c
        assert (c["device_class"], c["unit_of_measurement"]) == ("energy", "kWh")
        assert c["json_attributes_topic"] == c["state_topic"]


def test_flow_counters_are_energy_meters_per_role():
    full = configs()
    totals = {key(t): c for t, c in full.items() if c["state_topic"] == "he-test/flow/totals"}
    assert set(totals) == {k for k, *_ in hass.TOTAL_SENSORS}
    for c in totals.values():
        assert (c["device_class"], c["state_class"], c["unit_of_measurement"]) == ("energy", "total_increasing",
                                                                                  "kWh")
    slot = {key(t): c for t, c in full.items() if c["state_topic"] == "he-test/flow/slot"}
    assert set(slot) == {"autarky_slot", "self_consumption_slot"}
    for c in slot.values():
        assert (c["unit_of_measurement"], c["state_class"]) == ("%", "measurement") and "device_class" not in c
    # a house with a grid meter only: no PV or battery sensors, and the ones an earlier setup made are deleted
    grid_only = configs({"grid", "consumer"})
    present = {key(t) for t, c in grid_only.items() if c is not None}
    deleted = {key(t) for t, c in grid_only.items() if c is None}
    assert present == {"consumption_next_15min", "consumption_next_24h", "forecast_skill_next_15min",
                       "forecast_skill_day_ahead", "grid_import_total", "grid_export_total", "house_total",
                       "autarky_slot"}
    assert deleted == {"pv_total", "battery_charge_total", "battery_discharge_total", "self_supplied_total",
                       "self_consumption_slot"}
    no_battery = configs({"grid", "pv"})
    assert {key(t) for t, c in no_battery.items() if c is None} == {"battery_charge_total",
                                                                   "battery_discharge_total"}


def test_live_skill_is_a_percentage_per_horizon_with_its_provenance_as_attributes():
    skill = {key(t): c for t, c in configs().items() if "/forecast/skill/" in c["state_topic"]}
    assert set(skill) == {"forecast_skill_next_15min", "forecast_skill_day_ahead"}
    assert skill["forecast_skill_next_15min"]["state_topic"] == "he-test/forecast/skill/1"
    assert skill["forecast_skill_day_ahead"]["state_topic"] == "he-test/forecast/skill/96"
    for c in skill.values():
        assert (c["unit_of_measurement"], c["state_class"]) == ("%", "measurement") and "device_class" not in c
        assert c["json_attributes_topic"] == c["state_topic"]
        for attr in ("model", "version", "slots", "guard_reason", "baseline"):
            assert f"'{attr}': value_json.get('{attr}')" in c["json_attributes_template"]
    with pytest.raises(ValueError, match=r"node_id"):
        hass.skill_discovery("my node", PREFIX)


def test_bad_node_id_and_unknown_role_name_the_key():
    with pytest.raises(ValueError, match=r"\[forecast\]\.node_id"):
        hass.forecast_discovery("my node", PREFIX)
    with pytest.raises(ValueError, match="roles_present.*heatpump"):
        hass.flow_discovery(NODE, PREFIX, roles_present={"grid", "heatpump"})


# -- Home Assistant's own code, in its venv --------------------------------------------------------------------

def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = datetime.now(UTC)
TOTALS = {"grid_import_kwh": 1234.5678, "grid_export_kwh": 321.0, "pv_kwh": 4000.25, "battery_charge_kwh": 800.5,
          "battery_discharge_kwh": 760.125, "house_kwh": 5000.0, "self_supplied_kwh": 3000.75,
          "last_slot": "2026-11-25T10:15:00Z"}
SLOT_FIELDS = {"grid_import": 0.05, "grid_export": 0.0, "pv": 0.2, "battery_charge": 0.0,
               "battery_discharge": 0.03, "house": 0.22, "pv_to_house": 0.14, "pv_to_battery": 0.0,
               "pv_to_grid": 0.06, "grid_to_house": 0.05, "grid_to_battery": 0.0, "battery_to_house": 0.03,
               "battery_to_grid": 0.0, "battery_to_house_pv": 0.01, "battery_to_house_grid": 0.02,
               "self_supplied": 0.15, "self_consumption": 0.7, "autarky": 0.682, "flags": "",
               "slot_end": "2026-11-25T10:15:00Z"}
NIGHT_SLOT = {**SLOT_FIELDS, "pv": 0.0, "pv_to_house": 0.0, "pv_to_grid": 0.0, "self_consumption": None,
              "autarky": 0.0}


def skill_payload(horizon: int, issued: datetime, **extra) -> str:
    doc = {"issued_at": iso(issued), "horizon": horizon, "issue": "rolling" if horizon == 1 else "day_ahead",
           "window": "7d", "name": f"cnn-{horizon}", "model": "cnn", "version": "20261124T101500Z", "skill": 0.12345,
           "skill_1d": 0.2, "skill_30d": 0.1, "slots": 640, "mae_kwh": 0.05, "baseline": "persistence",
           "baseline_mae_kwh": 0.057, "state": "serving", "guard_reason": None, **extra}
    return json.dumps(doc)


def forecast_payload(horizon: int, issued: datetime, **extra) -> str:
    values = [0.3125] if horizon == 1 else [0.25] * 96
    doc = {"issued_at": iso(issued), "name": f"cnn-{horizon}", "model": "cnn", "version": "20261124T101500Z",
           "horizon": horizon, "unit": "kWh", "next_kwh": values[0], "total_kwh": round(sum(values), 3),
           "first_target": iso(issued + timedelta(minutes=15)), "values": values, **extra}
    return json.dumps(doc)


SAMPLES = {
    "he-test/flow/totals": [json.dumps(TOTALS)],
    "he-test/flow/slot": [json.dumps(SLOT_FIELDS), json.dumps(NIGHT_SLOT)],
    "he-test/forecast/best/1": [
        forecast_payload(1, NOW - timedelta(seconds=90), p10=[0.2], p90=[0.45], next_p10_kwh=0.2, next_p90_kwh=0.45,
                         fallback_reason=None, input_complete=True),
        forecast_payload(1, NOW - timedelta(days=3), fallback_reason=None, input_complete=True),  # retained, old
        forecast_payload(1, NOW - timedelta(seconds=90)),  # an agent from before issue 18: no new keys
    ],
    "he-test/forecast/skill/1": [
        skill_payload(1, NOW - timedelta(seconds=90)),
        skill_payload(1, NOW - timedelta(seconds=90), skill=-0.25, state="shadow",
                      guard_reason="guard: cnn-1 20261124T101500Z lost to persistence over the last 7 days (…)"),
        skill_payload(1, NOW - timedelta(seconds=90), skill=None, slots=0, state="learning"),  # not scored yet
        skill_payload(1, NOW - timedelta(days=3)),  # retained, old
    ],
    "he-test/forecast/skill/96": [
        skill_payload(96, NOW - timedelta(minutes=5), name=None, model=None, version=None, skill=None, slots=0,
                      state=None),  # no day-ahead model: only the best baseline is known
    ],
    "he-test/forecast/best/96": [
        forecast_payload(96, NOW - timedelta(minutes=5), fallback_reason="no_model", input_complete=False),
        forecast_payload(96, NOW - timedelta(minutes=31), fallback_reason=None, input_complete=True),
    ],
}


@pytest.fixture(scope="module")
def ha_judge():
    if not HASS_PY.exists():
        pytest.skip(f"no Home Assistant venv at {HASS_PY}: `make venv-hass` builds it (needs Python >= 3.13; "
                    "about 2 minutes, 630 MB)")

    def run(pairs: list[tuple[str, str]], samples: dict | None = None) -> tuple[str, dict[str, dict]]:
        doc = {"discovery_prefix": DISC, "configs": pairs, "samples": samples or {}}
        r = subprocess.run([str(HASS_PY), str(Path(__file__).with_name("hass_check.py"))], input=json.dumps(doc),
                           capture_output=True, text=True, timeout=120, cwd="/")
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout)
        return out["ha_version"], {res["topic"]: res for res in out["results"]}
    return run


def test_home_assistant_accepts_every_config(ha_judge):
    pairs = hass.forecast_discovery(NODE, PREFIX, DISC) + hass.skill_discovery(NODE, PREFIX, DISC) \
        + hass.flow_discovery(NODE, PREFIX, DISC, ALL_ROLES)
    version, results = ha_judge(pairs)
    assert version.startswith("20"), version
    for topic, payload in pairs:
        res = results[topic]
        cfg = json.loads(payload)
        assert res["topic_ok"], topic
        assert res["strict_error"] is None, (topic, res["strict_error"])
        assert res["discovery_error"] is None, (topic, res["discovery_error"])
        assert res["dropped_keys"] == [] and res["deprecated_keys"] == [], (topic, res)
        if cfg["state_topic"].endswith("/flow/totals"):
            assert res["energy_dashboard_source"] and res["long_term_statistics"], topic
        elif "/forecast/skill/" in cfg["state_topic"]:  # a skill's history is kept (mean/min/max), no energy
            assert res["long_term_statistics"] and not res["energy_dashboard_source"], topic
        elif "/forecast/" in cfg["state_topic"]:
            assert not res["long_term_statistics"] and not res["energy_dashboard_source"], topic
        else:  # the slot's ratios: statistics (mean/min/max), but no Energy-dashboard source
            assert res["long_term_statistics"] and not res["energy_dashboard_source"], topic
    deletions = hass.flow_discovery(NODE, PREFIX, DISC, {"grid"})
    _, results = ha_judge(deletions)
    assert all(results[t]["topic_ok"] and results[t].get("delete") for t, p in deletions if p == "")


def test_the_checker_finds_what_was_wrong_before_issue_18(ha_judge):
    """The same checks on the config forecast.py published before: they must catch each finding."""
    topic = "homeassistant/sensor/testnode/consumption_next_15min/config"
    _, results = ha_judge([(topic, json.dumps(OLD_FORECAST_CONFIG))])
    res = results[topic]
    assert res["strict_error"] is None  # HA accepted it: the problems were in what it meant
    assert res["deprecated_keys"] == ["object_id"]
    assert res["long_term_statistics"] and res["energy_dashboard_source"]  # a forecast offered as a meter
    assert "availability_topic" not in OLD_FORECAST_CONFIG and "expire_after" not in OLD_FORECAST_CONFIG
    # and a typo is caught: the strict schema refuses unknown keys, discovery would drop them silently
    bad = dict(json.loads(hass.forecast_discovery(NODE, PREFIX, DISC)[0][1]), expire_afer=60)
    _, results = ha_judge([(topic, json.dumps(bad))])
    assert "expire_afer" in results[topic]["strict_error"] and results[topic]["dropped_keys"] == ["expire_afer"]


def test_templates_render_the_contract_payloads_in_home_assistant(ha_judge):
    pairs = hass.forecast_discovery(NODE, PREFIX, DISC) + hass.skill_discovery(NODE, PREFIX, DISC) \
        + hass.flow_discovery(NODE, PREFIX, DISC, ALL_ROLES)
    _, results = ha_judge(pairs, SAMPLES)
    by_key = {key(t): r["rendered"] for t, r in results.items()}
    for k, _name, field, _role in hass.TOTAL_SENSORS:
        [r] = by_key[k]
        assert float(r["value"]) == TOTALS[field], k
        assert json.loads(r["attributes"]) == {"last_slot": "2026-11-25T10:15:00Z"}
    day, night = by_key["autarky_slot"]
    assert float(day["value"]) == pytest.approx(68.2) and float(night["value"]) == 0.0
    day, night = by_key["self_consumption_slot"]
    assert float(day["value"]) == pytest.approx(70.0)
    assert night["value"] == "None"  # 0/0 (no PV): unknown in HA, not 0 %
    assert json.loads(day["attributes"]) == {"slot_end": "2026-11-25T10:15:00Z"}
    fresh, stale, old_agent = by_key["consumption_next_15min"]
    assert float(fresh["value"]) == 0.3125
    assert stale["value"] == "None"  # a retained forecast from three days ago is not shown as current
    assert json.loads(fresh["attributes"]) == {"issued_at": iso(NOW - timedelta(seconds=90)), "model": "cnn",
                                               "version": "20261124T101500Z", "fallback_reason": None,
                                               "input_complete": True, "next_p10_kwh": 0.2, "next_p90_kwh": 0.45}
    assert float(old_agent["value"]) == 0.3125
    assert json.loads(old_agent["attributes"])["fallback_reason"] is None
    fallback, too_old = by_key["consumption_next_24h"]
    assert float(fallback["value"]) == 24.0
    assert json.loads(fallback["attributes"])["fallback_reason"] == "no_model"
    assert too_old["value"] == "None"  # 31 minutes: older than expire_after
    serving, shadow, learning, stale = by_key["forecast_skill_next_15min"]
    assert float(serving["value"]) == 12.3 and float(shadow["value"]) == -25.0
    assert learning["value"] == "None" and stale["value"] == "None"  # unknown, not 0 %
    attrs = json.loads(shadow["attributes"])
    assert (attrs["model"], attrs["version"], attrs["slots"], attrs["state"]) == ("cnn", "20261124T101500Z", 640,
                                                                                    "shadow")
    assert attrs["guard_reason"].startswith("guard: cnn-1") and attrs["baseline"] == "persistence"
    assert json.loads(serving["attributes"])["guard_reason"] is None
    [no_model] = by_key["forecast_skill_day_ahead"]
    assert no_model["value"] == "None" and json.loads(no_model["attributes"])["baseline"] == "persistence"


def test_the_disk_writes_sensor_is_a_diagnostic_data_size(ha_judge):
    """Issue 24: the agent's own bytes written per day, as Home Assistant shows it (MB, unknown until known)."""
    pairs = hass.health_discovery(NODE, PREFIX, DISC, interval_s=60)
    [(topic, payload)] = pairs
    cfg = json.loads(payload)
    assert topic == "homeassistant/sensor/testnode/disk_writes_per_day/config"
    assert cfg["state_topic"] == "he-test/agent/health" and cfg["expire_after"] == 180
    assert (cfg["device_class"], cfg["unit_of_measurement"], cfg["entity_category"]) == ("data_size", "MB",
                                                                                          "diagnostic")
    samples = {"he-test/agent/health": [json.dumps({"bytes_written_per_day": 23_456_789, "uptime_s": 3600}),
                                        json.dumps({"uptime_s": 30})]}
    _, results = ha_judge(pairs, samples)
    res = results[topic]
    assert res["strict_error"] is None and res["discovery_error"] is None and res["dropped_keys"] == []
    assert res["long_term_statistics"] and not res["energy_dashboard_source"]
    known, early = res["rendered"]
    assert float(known["value"]) == 23.5 and early["value"] == "None"
