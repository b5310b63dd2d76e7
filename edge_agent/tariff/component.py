"""The tariff component: import prices per slot (flat, time of use, or dynamic from MQTT) and what the house pays.

- The flow asks `import_prices(ends, stored)` for every slot it computes and stores `cost` = grid_import × price −
  grid_export × feed_in with the slot (`import_price`, `feed_in_price` beside it), so a slot recomputed later keeps
  the price it had: a dynamic price list that no longer holds the slot still prices it right. A slot whose price is
  not known yet is flagged `missing_price` and priced when the prices arrive (within the look-back).
- `publish_actual()` publishes "cost today" / "cost yesterday" (the house's local days, the sums of the slots'
  `cost`) and the price now on `<prefix>/cost`; the forecast loop calls `forecast_cost()` and publishes
  `<prefix>/cost/forecast` (the day-ahead forecast × the known prices).
- Dynamic prices come retained on `prices_topic` (its own small MQTT connection, like the away input); a new list
  replaces the prices of the slots it covers and wakes the flow for slots still waiting for a price.

Home Assistant prices each reading at arrival, so its cost drifts from the bill when prices jump between a
reading and the slot it belongs to; here every slot is priced by its own interval (docs/home-assistant.md).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge_agent.component import AgentContext, ComponentSpec
from edge_agent.config import AgentConfig, ConfigError, build_dataclass
from edge_agent.publish import hass
from edge_agent.runtime.timer import floor_slot
from edge_agent.tariff.prices import TariffConfig, check, configured_price, parse_dynamic
from shared.schema import DAY_NS, ENERGY_FLOW, SLOT_NS
from shared.series import iso

log = logging.getLogger(__name__)

KEEP_NS = 3 * DAY_NS  # dynamic prices older than this are dropped (the slots keep theirs)


def parse_config(cfg: AgentConfig) -> TariffConfig | None:
    """The [tariff] section, validated; None when it is absent or disabled."""
    if "tariff" not in cfg.raw:
        return None
    where = f"{cfg.path}: [tariff]"
    tc = build_dataclass(TariffConfig, cfg.section("tariff"), where)
    forecast_tz = cfg.section("forecast").get("timezone") if "forecast" in cfg.raw else None
    try:
        check(tc, where, forecast_tz if isinstance(forecast_tz, str) and forecast_tz else "UTC")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return tc if tc.enabled else None


def cost_topic(prefix: str) -> str:
    return f"{prefix}/cost"


def forecast_cost_topic(prefix: str) -> str:
    return f"{prefix}/cost/forecast"


class Tariff:
    def __init__(self, tc: TariffConfig, ctx: AgentContext):
        self.tc, self.ctx = tc, ctx
        self.prefix = ctx.topic_prefix
        self._tz = ZoneInfo(tc.timezone)
        self._lock = threading.Lock()
        self._dynamic: dict[int, float] = {}  # slot end → price (from prices_topic)
        self._storage = ctx.open_storage()
        self.client = None
        if tc.prices_topic:
            from edge_agent.runtime.mqtt_client import make_client

            self.client = make_client(ctx.config, f"{ctx.config.mqtt.client_id}-tariff", manual_ack=False,
                                      on_thread_failure=lambda exc: ctx.health.thread_failed("mqtt_tariff"))
            self.client.on_connect = self._on_connect
            self.client.on_message = self._on_message

    # -- prices ---------------------------------------------------------------------------------------------
    @property
    def feed_in(self) -> float:
        return self.tc.feed_in

    def import_prices(self, ends: np.ndarray, stored: dict[int, float] | None = None) -> np.ndarray:
        """Per slot end: the dynamic price, else the price stored with the slot, else the configured one (NaN:
        none known)."""
        stored = stored or {}
        with self._lock:
            dynamic = {int(t): self._dynamic.get(int(t)) for t in ends}
        out = np.full(len(ends), np.nan)
        for i, t in enumerate(int(t) for t in ends):
            for p in (dynamic[t], stored.get(t), configured_price(self.tc, t)):
                if p is not None:
                    out[i] = p
                    break
        return out

    def set_prices(self, prices: dict[int, float]) -> None:
        """Take a dynamic price list (slot end → price); slots already computed without a price are redone."""
        now = int(self.ctx.clock().timestamp() * 1e9)
        with self._lock:
            self._dynamic.update(prices)
            for t in [t for t in self._dynamic if t < now - KEEP_NS]:
                del self._dynamic[t]
        log.info("tariff: %d slot prices from %s to %s", len(prices), iso(min(prices) - SLOT_NS), iso(max(prices)))
        self.ctx.health.incr("tariff_updates")
        if min(prices) <= now:
            self.ctx.timer.trigger("flow", 1.0)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if not reason_code.is_failure:
            client.subscribe(self.tc.prices_topic, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        if not msg.payload:
            return
        try:
            self.set_prices(parse_dynamic(msg.payload, self.tc.prices_scale, self.tc.prices_add))
        except ValueError as exc:
            self.ctx.health.incr("tariff_rejected")
            log.warning("tariff: %s on %s: %s (the previous prices stay)", "rejected", msg.topic, exc)
        except Exception:  # whatever else a message provokes (deep JSON: RecursionError) costs that message only
            self.ctx.health.incr("tariff_rejected")
            log.exception("tariff: a message on %s could not be handled; the previous prices stay", msg.topic)

    # -- what it cost ----------------------------------------------------------------------------------------
    def local_midnight_ns(self, day) -> int:
        return int(datetime.combine(day, time(0), self._tz).timestamp()) * 10**9

    def _day_cost(self, day) -> tuple[float | None, int]:
        """The sum of the slots' cost that end in the local day (after its midnight, up to the next one)."""
        lo, hi = self.local_midnight_ns(day), self.local_midnight_ns(day + timedelta(days=1))
        rows = self._storage.query(f'SELECT sum("cost") AS c, count("cost") AS n '
                                   f"FROM {self._storage.source(ENERGY_FLOW)} WHERE time > {lo} AND time <= {hi}")
        if not rows or rows[0].get("n") in (None, 0):
            return (0.0, 0) if lo >= int(self.ctx.clock().timestamp() * 1e9) - SLOT_NS else (None, 0)
        return float(rows[0]["c"]), int(rows[0]["n"])

    def actual_payload(self) -> dict:
        now = self.ctx.clock()
        today = now.astimezone(self._tz).date()
        cost_today, n_today = self._day_cost(today)
        cost_yesterday, n_yesterday = self._day_cost(today - timedelta(days=1))
        current = floor_slot(now) + SLOT_NS  # the slot in progress
        price_now = self.import_prices(np.array([current]))[0]
        return {"currency": self.tc.currency, "day": today.isoformat(), "last_reset": iso(self.local_midnight_ns(today)),
                "today": _round(cost_today), "today_slots": n_today,
                "yesterday": _round(cost_yesterday), "yesterday_slots": n_yesterday,
                "price_now": _round(price_now, 5), "feed_in_price": self.tc.feed_in, "updated": iso(floor_slot(now))}

    def publish_actual(self) -> None:
        try:
            doc = self.actual_payload()
            self.ctx.publish(cost_topic(self.prefix), json.dumps(doc), qos=1, retain=True)
        except Exception as exc:  # the flow's slots are written already; the sensors wait for the next slot
            self.ctx.health.incr("publish_errors")
            log.warning("tariff: cost today/yesterday not published: %s", exc)

    def forecast_cost(self, issue_ns: int, values: np.ndarray) -> tuple[np.ndarray, dict]:
        """Per target slot value × import price (NaN where no price is known) and the payload of
        `<prefix>/cost/forecast` (the sum over the 96 slots only when every one has a price)."""
        ends = issue_ns + SLOT_NS * np.arange(1, len(values) + 1, dtype=np.int64)
        price = self.import_prices(ends)
        cost = np.asarray(values, float) * price
        known = np.isfinite(cost)
        doc = {"issued_at": iso(issue_ns), "currency": self.tc.currency,
               "cost_next_24h": _round(float(cost.sum())) if known.all() else None,
               "cost_priced_slots": _round(float(cost[known].sum())), "priced_slots": int(known.sum()),
               "slots": len(values), "priced_until": iso(int(ends[known][-1])) if known.any() else None,
               "energy_kwh": round(float(np.sum(values)), 3)}
        return cost, doc

    # -- Home Assistant --------------------------------------------------------------------------------------
    def discovery_components(self) -> dict[str, dict]:
        """Cost today / yesterday, the price now and (with a forecast) the forecast cost of the next 24 h."""
        pub = self.ctx.config.publish
        out = hass.cost_components(pub.node_id, pub.topic_prefix, self.tc.currency, cost_topic(pub.topic_prefix),
                                   forecast_cost_topic(pub.topic_prefix))
        if "forecast" not in self.ctx.components:
            out["forecast_cost_next_24h"] = hass.removed()
        return out

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.client is not None:
            c = self.ctx.config.mqtt
            self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
            self.client.loop_start()

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        self._storage.close()


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


SPEC = ComponentSpec("tariff", parse_config, Tariff)
