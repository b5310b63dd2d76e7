"""Measurement schema shared by the edge agent, the server, training and the dashboards (docs/architecture.md)."""

from __future__ import annotations

SLOT_SECONDS = 900
SLOT_NS = SLOT_SECONDS * 1_000_000_000
SLOTS_PER_DAY = 96

DEFAULT_DATABASE = "energy"

# Seed devices (the original hackathon): measurement = FeatureType.
SEED_MEASUREMENTS = ("EnergyMeter", "Battery", "PvString")
DEVICE_TAGS = ("device_id", "device_name", "device_type")

ENERGY_FLOW = "energy_flow"
ENERGY_FLOW_FIELDS = (
    "grid_import", "grid_export", "pv", "battery_charge", "battery_discharge", "house",
    "pv_to_house", "pv_to_battery", "pv_to_grid", "grid_to_house", "grid_to_battery", "battery_to_house",
)
ENERGY_FLOW_RATIOS = ("self_consumption", "autarky")
HOUSE_FIELD = "house"

FORECAST = "forecast"
FORECAST_TAGS = ("model", "version", "horizon", "name")
FORECAST_VALUE_FIELD = "value_kwh"
FORECAST_ISSUED_FIELD = "issued_at"
BASELINE_MODEL = "baseline"

AGENT = "agent"
FORECAST_SKILL = "forecast_skill"

# Written by the agent itself: device rules may not write them unless a rule says so (`allow_reserved`).
RESERVED_MEASUREMENTS = frozenset({ENERGY_FLOW, FORECAST, AGENT, FORECAST_SKILL})

BUNDLE_NAMES = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
