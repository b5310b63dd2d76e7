"""Forecasting on the edge: every slot, the active int8 models (or a naive baseline) on the consumption series,
written to InfluxDB and published for Home Assistant."""

from edge_agent.forecast.component import SPEC, ForecastConfig, Forecaster
from edge_agent.forecast.horizon import HorizonResult

__all__ = ["SPEC", "ForecastConfig", "Forecaster", "HorizonResult"]
