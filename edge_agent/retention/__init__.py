"""Bounded storage: raw readings expire, what lasts (the energy flow, forecasts, skill and per-device 15-minute
aggregates the agent computes) is kept in a policy of its own (docs/pi.md "Retention")."""

from edge_agent.retention.component import SPEC, Retention
from edge_agent.retention.config import RetentionConfig

__all__ = ["SPEC", "Retention", "RetentionConfig"]
