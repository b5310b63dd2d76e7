"""The agent's HTTP API (`[api]`): models in (upload, activate, roll back) and forecasts out, behind the limits an
unauthenticated client cannot get around."""

from edge_agent.api.component import SPEC, ApiConfig, ModelApi, parse_config

__all__ = ["SPEC", "ApiConfig", "ModelApi", "parse_config"]
