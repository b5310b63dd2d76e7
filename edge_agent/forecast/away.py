"""The "away" input: the house is empty from … to …, and the day-ahead forecast for those slots says so.

Topics (under the agent's `[publish] topic_prefix`):
- `<prefix>/away` — retained JSON `{"from": "2026-12-20T08:00:00Z", "to": "2026-12-27T18:00:00Z"}` (RFC 3339; either
  may be null: from now / until further notice); an empty retained payload means "home". Anyone may set it
  (`mosquitto_pub -r`, a Home Assistant automation with date pickers); the broker keeps it across restarts.
- `<prefix>/away/set` — the Home Assistant switch's commands: `ON` = away from now until switched off (the agent
  publishes the window on `<prefix>/away`), `OFF` = home (the agent clears it).
- `<prefix>/away/state` — `ON`/`OFF`, retained, published by the agent whenever the window starts, ends or changes:
  the switch's state.

Every horizon-96 forecast (models and baseline, rolling and day-ahead issue) whose target slots fall in the window
gets the empty-house profile there (shared.away: what the house drew at the low end of the same time of day over
the last 28 days), and those points carry the field `away = true`, so live scoring can mark or leave out those
days. The next-slot forecast is left alone: it follows the measured consumption within 15 minutes anyway.
The agent listens on its own small MQTT connection (ingest's is for device data; the publisher's only publishes).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.publish import hass
from shared import away as profile
from shared.schema import DAY_NS, SLOT_NS
from shared.series import SlotSeries, iso, parse_time_ns

log = logging.getLogger(__name__)

ON, OFF = "ON", "OFF"


def window_topic(prefix: str) -> str:
    return f"{prefix}/away"


def command_topic(prefix: str) -> str:
    return f"{prefix}/away/set"


def state_topic(prefix: str) -> str:
    return f"{prefix}/away/state"


@dataclass(frozen=True)
class AwayWindow:
    start_ns: int | None  # None: since always (the window has begun)
    end_ns: int | None  # None: until further notice

    def covers(self, slot_end_ns: np.ndarray) -> np.ndarray:
        """Slots (by end time) whose middle lies in [from, to)."""
        mid = np.asarray(slot_end_ns, dtype=np.int64) - SLOT_NS // 2
        inside = np.ones(len(mid), dtype=bool)
        if self.start_ns is not None:
            inside &= mid >= self.start_ns
        if self.end_ns is not None:
            inside &= mid < self.end_ns
        return inside

    def active(self, now_ns: int) -> bool:
        return bool(self.covers(np.array([now_ns + SLOT_NS // 2]))[0])

    def to_payload(self) -> str:
        return json.dumps({"from": None if self.start_ns is None else iso(self.start_ns),
                           "to": None if self.end_ns is None else iso(self.end_ns)})


MAX_AHEAD_NS = 366 * DAY_NS  # neither bound more than a year ahead …
MAX_FROM_PAST_NS = 366 * DAY_NS  # … `from` at most a year ago (away for months is fine) …
MAX_TO_PAST_NS = DAY_NS  # … and `to` at most a day ago (an old retained window is stale, not "away")


def parse_window(payload: bytes | str, now_ns: int) -> AwayWindow | None:
    """The retained `<prefix>/away` payload → a window, or None (home). ValueError names what is wrong.

    Both bounds must lie within about a year of `now_ns` (issue 23: a window to the year 9999 was used although
    the agent could not print it, and every forecast cycle then failed to publish)."""
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
    if not text.strip():
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deep nesting, which killed the client's thread
        raise ValueError("away: payload must be JSON {\"from\": RFC 3339 | null, \"to\": RFC 3339 | null}") from None
    if not isinstance(doc, dict) or not set(doc) <= {"from", "to"}:
        raise ValueError("away: payload must be an object with only the keys from and to")
    bounds = []
    for key in ("from", "to"):
        value = doc.get(key)
        if value is None:
            bounds.append(None)
            continue
        if not isinstance(value, str):
            raise ValueError(f"away: {key} must be an RFC 3339 time string or null")
        try:
            bounds.append(parse_time_ns(value))
        except (ValueError, OverflowError):
            raise ValueError(f"away: {key} {value[:40]!r} is not an RFC 3339 time") from None
        earliest = now_ns - (MAX_FROM_PAST_NS if key == "from" else MAX_TO_PAST_NS)
        if not earliest <= bounds[-1] <= now_ns + MAX_AHEAD_NS:
            raise ValueError(f"away: {key} {value[:40]!r} is out of range (at most a year ahead; "
                             f"{'a year' if key == 'from' else 'a day'} in the past)")
    if bounds[0] is not None and bounds[1] is not None and bounds[1] <= bounds[0]:
        raise ValueError("away: to must be after from")
    return AwayWindow(bounds[0], bounds[1])


def switch_component(node_id: str, prefix: str) -> dict:
    """The away switch as a component of the agent's Home Assistant device config (edge_agent/publish/hass.py)."""
    return hass.component("switch", node_id, "away", "Away (house empty)", command_topic=command_topic(prefix),
                          state_topic=state_topic(prefix), payload_on=ON, payload_off=OFF, state_on=ON, state_off=OFF,
                          optimistic=False, icon="mdi:home-export-outline")


class Away:
    """The current away window from MQTT, and its effect on the horizon-96 forecasts."""

    def __init__(self, config: AgentConfig, publish: Callable[..., None], clock: Callable[[], datetime],
                 health) -> None:
        from edge_agent.runtime.mqtt_client import make_client

        self.prefix = config.publish.topic_prefix
        self._publish, self._clock, self._health = publish, clock, health
        self._lock = threading.Lock()
        self._window: AwayWindow | None = None
        self._state: str | None = None
        self._config = config
        self.client = make_client(config, f"{config.mqtt.client_id}-away", manual_ack=False,
                                  on_thread_failure=lambda exc: health.thread_failed("mqtt_away"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    # -- MQTT --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        c = self._config.mqtt
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if not reason_code.is_failure:
            client.subscribe([(window_topic(self.prefix), 1), (command_topic(self.prefix), 1)])

    def _now_ns(self) -> int:
        return int(self._clock().timestamp() * 1e9)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            if msg.topic == command_topic(self.prefix):
                self._command(msg.payload.decode(errors="replace").strip().upper())
            elif msg.topic == window_topic(self.prefix):
                self.set_window(parse_window(msg.payload, self._now_ns()))
        except ValueError as exc:
            self._health.incr("away_invalid")
            log.warning("%s (topic %s; the previous away state stays)", exc, msg.topic)
        except Exception:  # whatever else a message provokes costs that message, not the connection
            self._health.incr("away_invalid")
            log.exception("away: a message on %s could not be handled; the previous away state stays", msg.topic)

    def _command(self, command: str) -> None:
        now_ns = self._now_ns()
        if command == ON:
            window = AwayWindow(now_ns, None)
            self.set_window(window)
            self._publish(window_topic(self.prefix), window.to_payload(), qos=1, retain=True)
        elif command == OFF:
            self.set_window(None)
            self._publish(window_topic(self.prefix), "", qos=1, retain=True)
        else:
            raise ValueError(f"away: switch command must be {ON} or {OFF}, not {command[:20]!r}")

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def window(self) -> AwayWindow | None:
        with self._lock:
            return self._window

    def set_window(self, window: AwayWindow | None) -> None:
        with self._lock:
            changed = window != self._window
            self._window = window
        if changed:
            log.info("away: %s", "home" if window is None else window.to_payload())
        self.publish_state()

    def publish_state(self) -> None:
        """`ON`/`OFF` on the state topic (retained) when it changed: the window began, ended or was set."""
        window = self.window
        state = ON if window is not None and window.active(self._now_ns()) else OFF
        if state != self._state:
            self._state = state
            self._publish(state_topic(self.prefix), state, qos=1, retain=True)

    # -- forecasts ---------------------------------------------------------------------------------------------
    def apply(self, issue_ns: int, results: list, series: SlotSeries) -> None:
        """Give the horizon-96 results the empty-house profile on the slots inside the window (in place)."""
        self.publish_state()
        window = self.window
        if window is None:
            return
        horizon = 96
        mask = window.covers(issue_ns + SLOT_NS * np.arange(1, horizon + 1))
        if not mask.any():
            return
        p10, p50, p90 = profile.profile(series, issue_ns, horizon)
        mask &= np.isfinite(p50)
        if not mask.any():
            log.warning("away: no history for the empty-house profile at %s; the forecast stays", iso(issue_ns))
            return
        for r in results:
            if r.horizon != horizon:
                continue
            r.values = np.where(mask, p50, r.values)
            if r.p10 is not None:
                r.p10 = np.where(mask, p10, r.p10)
                r.p90 = np.where(mask, p90, r.p90)
            else:
                r.p10 = np.where(mask, p10, np.nan)
                r.p90 = np.where(mask, p90, np.nan)
            r.away = mask
        self._health.incr("away_forecasts")
