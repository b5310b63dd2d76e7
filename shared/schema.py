"""Measurement schema shared by the edge agent, the server, training and the dashboards (docs/architecture.md)."""

from __future__ import annotations

SLOT_SECONDS = 900
SLOT_NS = SLOT_SECONDS * 1_000_000_000
SLOTS_PER_DAY = 96
DAY_NS = SLOTS_PER_DAY * SLOT_NS  # a UTC day (a local day is 23-25 h: shared.weather.local_day)

ENERGY_FLOW = "energy_flow"
ROLE_FIELDS = ("grid_import", "grid_export", "pv", "battery_charge", "battery_discharge")
ENERGY_FLOW_FIELDS = (  # kWh per slot (docs/energy-flow.md: every flow balances per slot)
    *ROLE_FIELDS, "house",
    "pv_to_house", "pv_to_battery", "pv_to_grid", "grid_to_house", "grid_to_battery", "battery_to_house",
    "battery_to_grid", "battery_cycled", "export_unexplained", "battery_to_house_pv", "battery_to_house_grid",
    "self_supplied",
)
ENERGY_FLOW_STATE = ("battery_content_kwh", "battery_pv_share")  # the battery's origin state at the slot end
ENERGY_FLOW_RATIOS = ("self_consumption", "autarky")
# With a [tariff] (edge_agent/tariff): fields `cost` = grid_import × import_price − grid_export × feed_in_price, in
# the tariff's currency, and `import_price`, `feed_in_price` per kWh it was computed with (kept when the slot is
# recomputed).
FLAGS_FIELD = "flags"
HOUSE_FIELD = "house"

FORECAST = "forecast"  # tags: model, version, horizon, name, issue
FORECAST_ISSUES = ("rolling", "day_ahead")  # re-issued every cycle / issued once a day at a fixed local time
FORECAST_VALUE_FIELD = "value_kwh"
FORECAST_ISSUED_FIELD = "issued_at"
FORECAST_FALLBACK_FIELD = "fallback"  # why a baseline was served ("" for a model)
FORECAST_COMPLETE_FIELD = "input_complete"
FORECAST_SHADOW_FIELD = "shadow"  # true: a model the guard keeps out of service (written and scored, not served)
FORECAST_P10_FIELD, FORECAST_P90_FIELD = "p10_kwh", "p90_kwh"  # the band (shared.intervals); absent without one
FORECAST_BAND_SCALE_FIELD = "band_scale"  # the band's recalibration when it was written (shared.intervals)
FORECAST_AWAY_FIELD = "away"  # true on day-ahead slots the empty-house profile replaced (shared.away)
FORECAST_COST_FIELD = "cost"  # value_kwh × the target slot's import price, where a [tariff] knows it
FORECAST_TEMPERATURE_FIELD = "temperature_source"  # a weather bundle's temperature input (which forecast), string
BASELINE_MODEL = "baseline"

AGENT = "agent"

# Live skill (edge_agent/forecast/skill.py). Tags: `horizon` 1|96, `issue` (the forecast series scored: `rolling`
# for the next slot, `day_ahead` for the day ahead), `model` (cnn|lstm|baseline), `name` (bundle or baseline name,
# e.g. cnn-1, persistence), `version` (a baseline's version is its name), `window`:
# - `slot`: one point per scored target slot and forecaster (time = the slot's end): `error_kwh` (forecast −
#   actual), `actual_kwh`, `issued_at` (RFC 3339) — what a restarted agent reads back;
# - `1d`, `7d`, `30d`: the rolling figures at each cycle (time = the cycle's issue time): `mae_kwh`, `rmse_kwh`,
#   `bias_kwh`, `slots` (int); for a model also `skill` (1 − MAE / MAE of the best baseline on the same slots;
#   absent when that MAE is 0), `skill_slots` (int), `baseline` (string), `baseline_mae_kwh`.
# A forecast with an interval (fields `p10_kwh`, `p90_kwh`) also gets `in_p10_p90` (bool) and `band_need` (the
# band scale that would have covered the actual, shared.intervals.needed_scale) per slot, and
# `p10_p90_coverage`, `coverage_slots` (int) in the rolling figures.
FORECAST_SKILL = "forecast_skill"

# The outdoor temperature per slot as the weather bundles were given it (edge_agent/forecast/weather.py): time = slot
# end, field `temperature_c`, tag `source` (measured | forecast) — the record a restart and the server's trainings read.
WEATHER_SLOTS = "weather_slots"
WEATHER_TEMPERATURE_FIELD, WEATHER_SOURCE_TAG = "temperature_c", "source"
WEATHER_MEASURED, WEATHER_FORECAST = "measured", "forecast"  # the `source` tag's values

# Per-device 15-minute aggregates the agent computes from the raw readings (edge_agent/retention/): time = slot end;
# tags: the device's own tags plus `measurement` (the raw measurement); fields: a counter's value at the slot end
# under the counter's own name (e.g. `EnergyIn`), and `<field>_mean`, `<field>_min`, `<field>_max`, `<field>_count`
# of every other numeric field over the slot (T − 15 min, T].
DEVICE_SLOTS = "device_slots"
DEVICE_SLOTS_MEASUREMENT_TAG = "measurement"
GAUGE_STATS = ("mean", "min", "max", "count")

# What lasts (docs/pi.md "Retention"): with retention on, these live in the long retention policy (`[retention]
# keep_policy`, default `keep`) while raw readings and health expire after `raw_days` in the database's default one.
# shared.storage routes writes and reads of these measurements there.
KEPT_MEASUREMENTS = frozenset({ENERGY_FLOW, FORECAST, FORECAST_SKILL, DEVICE_SLOTS, WEATHER_SLOTS})

# Written by the agent itself: device rules may not write them unless a rule says so (`allow_reserved`).
RESERVED_MEASUREMENTS = frozenset({ENERGY_FLOW, FORECAST, AGENT, FORECAST_SKILL, DEVICE_SLOTS, WEATHER_SLOTS})

BUNDLE_NAMES = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
# Day-ahead bundles that also take the outdoor temperature (shared.weather): they run next to the bundles of the same
# kind without it, which serve whenever the temperature forecast is missing or stale (edge_agent/forecast/weather.py).
WEATHER_SUFFIX = "-weather"
WEATHER_BUNDLE_NAMES = ("cnn-96-weather", "lstm-96-weather")
ALL_BUNDLE_NAMES = (*BUNDLE_NAMES, *WEATHER_BUNDLE_NAMES)


def bundle_name(kind: str, horizon: int, weather: bool = False) -> str:
    """`cnn-96`, or `cnn-96-weather` for a bundle that takes the outdoor temperature."""
    return f"{kind}-{horizon}" + (WEATHER_SUFFIX if weather else "")
