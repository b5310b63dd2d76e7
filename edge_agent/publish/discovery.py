"""Announcing the agent to Home Assistant: every part's entities in one device-based discovery config.

Each built component that has `discovery_components() -> dict[str, dict]` (flow, forecast, tariff) contributes its
entities; anything else the agent announces is passed in `extra` (e.g. a problem binary sensor). Entities that a
release before device-based discovery announced one per topic are migrated once (edge_agent/publish/hass.py:
`migration`); `<state_dir>/hass_discovery.json` records the old topics already handled, so a restart does not make
Home Assistant log a conflicting migration request for entities it already has in the device config.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from edge_agent.config import PublishConfig
from edge_agent.publish import hass
from edge_agent.runtime.durable import replace_file

log = logging.getLogger(__name__)

MARKER = "hass_discovery.json"


def collect(parts: Iterable[object], extra: dict[str, dict] | None = None) -> dict[str, dict]:
    """The entities of every part that has `discovery_components()`, in order; a key used twice is an error."""
    out: dict[str, dict] = {}
    for part in parts:
        contribute = getattr(part, "discovery_components", None)
        if contribute is None:
            continue
        for key, cfg in contribute().items():
            if key in out:
                raise ValueError(f"Home Assistant discovery: entity {key!r} announced twice")
            out[key] = cfg
    for key, cfg in (extra or {}).items():
        if key in out:
            raise ValueError(f"Home Assistant discovery: entity {key!r} announced twice")
        out[key] = cfg
    return out


def announce(pub: PublishConfig, components: dict[str, dict], publish: Callable[..., None], state_dir: Path) -> None:
    """Publish the device config (retained), migrating entities still announced in the old form first."""
    if not components:
        return
    marker = state_dir / MARKER
    try:
        done = set(json.loads(marker.read_text()).get("migrated", []))
    except (OSError, ValueError, AttributeError):
        done = set()
    before, after = hass.migration(pub.node_id, components, pub.discovery_prefix)
    before = [(t, p) for t, p in before if t not in done]
    after = [(t, p) for t, p in after if t not in done]
    for topic, payload in before:
        publish(topic, payload, qos=1, retain=False)
    topic, payload = hass.device_config(pub.node_id, pub.topic_prefix, components, pub.discovery_prefix)
    publish(topic, payload, qos=1, retain=True)
    for topic, payload in after:
        publish(topic, payload, qos=1, retain=True)
    if after:
        log.info("Home Assistant: %d entities moved to device-based discovery (%s)", len(after), topic)
        try:
            replace_file(marker, json.dumps({"migrated": sorted(done | {t for t, _ in after})}).encode())
        except OSError as exc:  # the next start migrates again: Home Assistant logs a warning, nothing breaks
            log.warning("cannot record the discovery migration in %s: %s", marker, exc)
