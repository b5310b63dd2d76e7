"""The forecast component: every 15 minutes (+ a delay for late data) run every active bundle on the consumption
series — the I/O around the forecast core. A cycle reads its inputs (the series, the loaded models, the temperature),
scores what became known (skill.py) so the guard can judge, asks the core for each horizon's forecasts
(edge_agent/forecast/horizon.py: which model or baseline serves and why, no I/O), and writes and publishes the
points and payloads output.py makes of them.

Input: the consumption slots up to the issue time T, including the slot ending at T. For counter input that slot
needs the counter's value at T, i.e. the first reading after T (issue 18: reading only up to T left the newest
slot unknown, the window incomplete and the models unused in every house whose meters do not report exactly on
slot ends). Counter values at slot boundaries come from edge_agent/storage/boundaries.py (cached; out-of-order
readings invalidate them through the ingest's stored-batch hook).

Output: `forecast` points (time = target slot end; tags model, version, horizon, name, issue; fields value_kwh,
issued_at, fallback (why a baseline was served, "" for a model), input_complete). `issue` = "rolling" is
re-issued every cycle (later cycles overwrite the same targets); the horizon-96 forecast issued at
`day_ahead_at` (local time in `timezone`) is also written with issue = "day_ahead", once a day, never
overwritten: what was said a day ahead. Retained JSON on `<prefix>/forecast/<kind>/<horizon>` (kind cnn, lstm,
baseline, and `best`: the preferred model that produced a forecast). Without a model, when the input window has
gaps, or when a model fails (an exception, a non-finite value), the horizon's naive baseline is used and tagged
model=baseline with the reason; one model failing never drops the others' forecasts.

Live skill and the guard (skill.py, guard.py): every cycle first scores what became known, then judges the loaded
models; a model that lost to the best baseline over `guard_days` is kept in the shadow (its forecasts are written
with `shadow` = true and scored, not served or published) and the baseline it lost to is served with the reason.

Bands: a bundle whose manifest has `intervals` (shared.intervals) gives P10/P90 per slot: fields p10_kwh and p90_kwh
(P50 is value_kwh), the payload's `p10`/`p90` lists and `next_p10_kwh`/`next_p90_kwh`. The band is recalibrated on
the bundle's live scoring of the last week (`band_scale`, written with the points and in the payload), so that it
keeps covering about 80 % when the house drifts from the weeks it was calibrated on. The away input (away.py)
replaces the horizon-96 values and band inside the away window with the empty-house profile (field away = true).

Weather bundles (`cnn-96-weather`, `lstm-96-weather`; weather.py): given the temperature as known at the issue time
(field `temperature_source` and the payload's `temperature_source` say which forecast); preferred over the bundle of
the same kind without it, which serves — its `fallback` saying why — when the forecast is missing or stale.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from edge_agent.component import AgentContext, ComponentSpec
from edge_agent.config import AgentConfig, ConfigError, at_least_one, build_dataclass, setting
from edge_agent.forecast import output
from edge_agent.forecast.away import Away, switch_component
from edge_agent.forecast.guard import Guard, GuardConfig, skill_payload
from edge_agent.forecast.horizon import HORIZONS, Decision, HorizonResult, decide, served_first
from edge_agent.forecast.horizon import best as best_of
from edge_agent.forecast.skill import Scorer
from edge_agent.forecast.weather import Weather, parse_weather
from edge_agent.publish import hass
from edge_agent.runtime.timer import floor_slot
from edge_agent.storage.boundaries import CounterBoundaries
from edge_agent.tariff.component import forecast_cost_topic
from shared.points import Point, escape_measurement
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import Readings, SlotSeries, iso, power_to_slots, slots_from_counter

log = logging.getLogger(__name__)


@dataclass
class ForecastConfig:
    enabled: bool = True
    source: str = "counter"  # counter (kWh), power (W) or slots (kWh per slot, e.g. energy_flow house)
    measurement: str = "EnergyMeter"
    field: str = "EnergyIn"
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 60.0  # after each boundary: the meters' first reading after it (and the flow) must be in
    max_interp_s: float = 1800.0  # counter input: interpolate between readings at most this far apart
    timezone: str = "UTC"  # the house's timezone: when the day-ahead forecast is issued
    day_ahead_at: str = "00:00"  # local time of the day-ahead issue (a slot boundary)
    # the house's public holidays (`DE`, `DE-HE`; "" none): the server's trainings for this house use them as an
    # input (it reads them from the status API); a bundle computes the calendar it declares, whatever this says
    holidays: str = ""
    models_dir: str = "models"
    preferred_kinds: list[str] = dataclasses.field(default_factory=lambda: ["cnn", "lstm"])
    # the guard (edge_agent/forecast/guard.py): serve the best baseline instead of a model that lost to it
    guard: bool = True
    # judged on its live figures over this many days
    guard_days: float = setting(7.0, check=lambda v: 0 < v <= 30, wants="between 0 and 30 (days; skill is kept 30 "
                                                                         "days)")
    # next slot: at least this many slots scored (of 672 a week)
    guard_min_slots_1: int = setting(300, check=at_least_one, wants="at least 1")
    # day ahead: at least five days of slots
    guard_min_slots_96: int = setting(480, check=at_least_one, wants="at least 1")
    # a model in the shadow serves again from this skill on
    guard_return_skill: float = setting(0.02, check=lambda v: 0 <= v < 1, wants="between 0 and 1 (e.g. 0.02)")
    away: bool = True  # listen for the away input on <topic_prefix>/away (away.py)
    # moved to [publish] (still read from here when [publish] is absent)
    topic_prefix: str | None = None
    ha_discovery: bool | None = None
    discovery_prefix: str | None = None
    node_id: str | None = None


def parse_config(cfg: AgentConfig) -> ForecastConfig | None:
    """The [forecast] section, validated; None when it is absent or disabled."""
    if "forecast" not in cfg.raw:
        return None
    where = f"{cfg.path}: [forecast]"
    fc = build_dataclass(ForecastConfig, cfg.section("forecast"), where)
    if fc.source not in ("counter", "power", "slots"):
        raise ConfigError(f"{where}.source must be counter, power or slots")
    try:
        ZoneInfo(fc.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}.timezone {fc.timezone!r} is not a known IANA timezone") from None
    try:
        hh, mm = (int(x) for x in fc.day_ahead_at.split(":"))
        if not (0 <= hh < 24 and mm in (0, 15, 30, 45)):
            raise ValueError
    except ValueError:
        raise ConfigError(f"{where}.day_ahead_at must be HH:MM on a slot boundary (:00, :15, :30, :45)") from None
    if fc.holidays:
        from shared.calendar import CalendarError, HolidayCalendar

        try:
            HolidayCalendar.parse(fc.holidays, fc.timezone).check()
        except CalendarError as exc:
            raise ConfigError(f"{where}.holidays {fc.holidays!r}: {exc}") from None
    parse_weather(cfg, fc.timezone)  # [weather]: the temperature input of weather bundles
    return fc if fc.enabled else None


def guard_config(fc: ForecastConfig) -> GuardConfig:
    return GuardConfig(fc.guard, fc.guard_days, {1: fc.guard_min_slots_1, 96: fc.guard_min_slots_96},
                       fc.guard_return_skill)


class Forecaster:
    def __init__(self, fc: ForecastConfig, ctx: AgentContext):
        self.config, self.fc, self.ctx = ctx.config, fc, ctx
        self.storage = ctx.open_storage()
        self.active = ctx.models()
        self.last_forecast: str | None = None
        self.last_results: list[HorizonResult] = []
        self.counter = CounterBoundaries(self.storage, fc.measurement, fc.field, fc.tags, fc.max_interp_s)
        self._prefix = escape_measurement(fc.measurement).encode()
        self._newest = 0
        self._tz = ZoneInfo(fc.timezone)
        if fc.source == "counter":
            ctx.on_stored(self._on_stored)
        self.skill = Scorer(self.storage, self.is_day_ahead_issue)
        self._skill_points: list[Point] = []
        self.guard = Guard(guard_config(fc))
        ctx.timer.add("forecast", fc.delay_s, self.run_once)
        self.away = Away(ctx.config, ctx.publish, ctx.clock, ctx.health) if fc.away else None
        self.tariff = ctx.components.get("tariff")  # built before the forecast (edge_agent/agent.py COMPONENTS)
        self._forecast_cost: dict | None = None
        wc = parse_weather(ctx.config, fc.timezone)
        self.weather = Weather(wc, ctx.config, self.storage, ctx.clock, ctx.health) if wc else None

    def history_slots(self) -> int:
        return self.active.history_slots(8 * SLOTS_PER_DAY + 40)

    # -- input --------------------------------------------------------------------------------------------
    def read_series(self, issue_ns: int) -> SlotSeries:
        """Consumption slots ending at or before issue_ns, enough for every active model and the baselines;
        the slot ending at issue_ns included (for counters: from the first reading after issue_ns)."""
        n = self.history_slots()
        start_ns = issue_ns - (n - 1) * SLOT_NS
        if self.fc.source == "counter":
            bounds = start_ns + SLOT_NS * np.arange(-1, n, dtype=np.int64)
            c, _spans = self.counter.values(bounds)
            self.counter.forget_before(int(bounds[0]))
            return SlotSeries(start_ns, slots_from_counter(c))
        start = datetime.fromtimestamp((start_ns - 2 * SLOT_NS) / 1e9, UTC)
        end = datetime.fromtimestamp(issue_ns / 1e9, UTC) + timedelta(microseconds=1)
        rows = self.storage.query_series(self.fc.measurement, self.fc.field, start, end, self.fc.tags or None)
        if self.fc.source == "slots":
            values = np.full(n, np.nan)
            for t, v in rows:
                i = (t - start_ns) // SLOT_NS
                if t % SLOT_NS == 0 and 0 <= i < n:
                    values[i] = v
            return SlotSeries(start_ns, values)
        # power: each sample holds until the next (at most 5 min), so the slot ending at T needs none after T
        return power_to_slots(Readings.from_rows(rows), start_ns=start_ns, end_ns=issue_ns)

    def _on_stored(self, lines: list[bytes]) -> None:
        """Counter readings that arrive out of order invalidate the cached boundary values they can change."""
        oldest = None
        for line in lines:
            if line.startswith(self._prefix) and line[len(self._prefix):len(self._prefix) + 1] in (b",", b" "):
                try:
                    t = int(line.rstrip(b"\n").rsplit(b" ", 1)[1])
                except (ValueError, IndexError):
                    continue
                if t <= self._newest:
                    oldest = t if oldest is None else min(oldest, t)
                else:
                    self._newest = t
        if oldest is not None:
            self.counter.invalidate_from(oldest)

    # -- one cycle ----------------------------------------------------------------------------------------
    def run_once(self, issue_ns: int | None = None) -> list[HorizonResult]:
        """Forecast for the slots after issue_ns (default: the last slot boundary), write and publish."""
        issue_ns = issue_ns if issue_ns is not None else floor_slot(self.ctx.clock())
        t0 = time.perf_counter()
        series = self._consumption(issue_ns)
        models = self.active.loaded()
        self._score(issue_ns, series, models)
        temperature, source = self._temperature(issue_ns, models)
        results: list[HorizonResult] = []
        for horizon in HORIZONS:
            decision = decide(horizon, series, issue_ns, models, temperature, source, self.guard,
                              lambda name, h=horizon: self._band_scale(h, name, issue_ns))
            self._report(decision, issue_ns)
            results.extend(decision.results)
        if self.away is not None:
            self.away.apply(issue_ns, results, series)
        self._price(issue_ns, results)
        self._write(issue_ns, results)
        self._publish(issue_ns, results)
        self.last_forecast = iso(issue_ns)
        self.last_results = results
        self.ctx.health.incr("forecast_cycles")
        self.ctx.health.set("forecast_cycle_ms", round((time.perf_counter() - t0) * 1000, 1))
        return results

    def _consumption(self, issue_ns: int) -> SlotSeries:
        """The cycle's one read of the consumption series (unknown everywhere when the database fails: then the
        core serves nothing it cannot compute)."""
        if self.fc.source != "slots":  # raw readings: those ingest holds in its current group go first (the flow's
            self.ctx.flush_ingest()  # slots were flushed before the flow computed them)
        try:
            return self.read_series(issue_ns)
        except Exception as exc:
            self.ctx.health.incr("forecast_errors")
            log.error("forecast: cannot read the consumption series: %s", exc)
            return SlotSeries(issue_ns, np.full(1, np.nan))

    def _report(self, decision: Decision, issue_ns: int) -> None:
        """The core's counters and failures into the agent's health and log."""
        for name, exc in decision.failed:
            log.error("forecast: %s failed: %s", name, exc)
        for counter in decision.counters:
            self.ctx.health.incr(counter)
        if not decision.skipped:
            return
        if decision.horizon == SLOTS_PER_DAY:  # a fresh install: the same slots of a day before are needed
            log.info("forecast: no day-ahead forecast at %s: no model, and not yet a day of history", iso(issue_ns))
        else:
            log.warning("forecast: no model and no history for horizon %d at %s", decision.horizon, iso(issue_ns))

    def _price(self, issue_ns: int, results: list[HorizonResult]) -> None:
        """With a [tariff]: each forecast's cost per target slot, and the served day-ahead forecast's cost."""
        self._forecast_cost = None
        if self.tariff is None:
            return
        try:
            for r in results:
                r.cost, doc = self.tariff.forecast_cost(issue_ns, r.values)
                if r is self.best(results, SLOTS_PER_DAY):
                    self._forecast_cost = doc | {"name": r.name, "model": r.model, "version": r.version}
        except Exception as exc:  # prices must never cost the forecast
            self.ctx.health.incr("forecast_errors")
            log.error("forecast: pricing failed: %s", exc)

    def is_day_ahead_issue(self, issue_ns: int) -> bool:
        """True for the cycle issued at `day_ahead_at` in the house's timezone."""
        local = datetime.fromtimestamp(issue_ns / 1e9, UTC).astimezone(self._tz)
        return local.strftime("%H:%M") == self.fc.day_ahead_at.zfill(5)

    def _write(self, issue_ns: int, results: list[HorizonResult]) -> None:
        """The forecasts and the cycle's skill points, in one write (one WAL fsync a cycle, not two)."""
        points = output.cycle_points(issue_ns, results, self.is_day_ahead_issue(issue_ns))
        skill, self._skill_points, self.skill.pending = self._skill_points, [], None
        try:
            self.storage.write(skill + points)
            self.ctx.health.incr("forecast_points", len(points))
        except Exception as exc:
            self.ctx.health.incr("forecast_errors")
            log.error("forecast: writing %d points failed: %s", len(points) + len(skill), exc)

    def _payload(self, issue_ns: int, r: HorizonResult) -> str:
        window = self.away.window if self.away is not None else None
        return output.payload(issue_ns, r, self.away is not None,
                              json.loads(window.to_payload()) if window is not None else None)

    def _publish(self, issue_ns: int, results: list[HorizonResult]) -> None:
        prefix = self.config.publish.topic_prefix
        try:
            topics: set[str] = set()
            for r in served_first(results):  # one forecast per kind: the weather bundle's when it forecast
                topic = f"{prefix}/forecast/{r.model}/{r.horizon}"
                if r.shadow or topic in topics:
                    continue
                topics.add(topic)
                self.ctx.publish(topic, self._payload(issue_ns, r), qos=1, retain=True)
            for horizon in HORIZONS:
                best = self.best(results, horizon)
                if best:
                    self.ctx.publish(f"{prefix}/forecast/best/{horizon}", self._payload(issue_ns, best), qos=1,
                                     retain=True)
            if self._forecast_cost is not None:
                self.ctx.publish(forecast_cost_topic(prefix), json.dumps(self._forecast_cost), qos=1, retain=True)
        except Exception as exc:
            self.ctx.health.incr("publish_errors")
            log.error("forecast: publishing failed: %s", exc)

    def best(self, results: list[HorizonResult], horizon: int) -> HorizonResult | None:
        return best_of(results, horizon, self.fc.preferred_kinds)

    # -- live skill and the guard ------------------------------------------------------------------------
    def _score(self, issue_ns: int, series: SlotSeries, models: dict) -> None:
        """Score what became known, judge the loaded models, publish the skill; never costs the forecast."""
        t0 = time.perf_counter()
        try:
            self.skill.pending = self._skill_points = []  # written with the forecasts (docs/pi.md: one write)
            self.skill.score(issue_ns, series)
        except Exception as exc:
            self.ctx.health.incr("skill_errors")
            log.error("skill: scoring the slots up to %s failed: %s", iso(issue_ns), exc)
        try:
            loaded = {n: (m.spec.horizon, m.manifest["kind"], m.manifest["version"]) for n, m in models.items()}
            for message in self.guard.update(issue_ns, loaded, self.skill.stats):
                log.warning("%s", message)
            prefix = self.config.publish.topic_prefix
            for horizon in HORIZONS:
                doc = skill_payload(issue_ns, horizon, self.skill, self.guard, loaded, self.fc.preferred_kinds)
                self.ctx.publish(hass.skill_topic(prefix, horizon), json.dumps(doc), qos=1, retain=True)
        except Exception as exc:
            self.ctx.health.incr("skill_errors")
            log.error("skill: judging or publishing failed: %s", exc)
        self.ctx.health.set("skill_ms", round((time.perf_counter() - t0) * 1000, 1))

    def _band_scale(self, horizon: int, name: str, issue_ns: int) -> float:
        """The bundle's band recalibration from its live scoring; 1 (the table as calibrated) if that fails."""
        try:
            return self.skill.band_scale(horizon, name, issue_ns)
        except Exception as exc:
            log.error("forecast: band recalibration of %s failed: %s", name, exc)
            return 1.0

    def _temperature(self, issue_ns: int, models: dict) -> tuple[SlotSeries | None, str]:
        """The temperature as known at issue_ns and its provenance, or (None, why not) — when a loaded bundle takes
        it; the cycle's one read of it."""
        if not any(m.needs_temperature for m in models.values()):
            return None, ""
        if self.weather is None:
            return None, "no [weather] section: no temperature input configured"
        try:
            return self.weather.known_at(issue_ns)
        except Exception as exc:  # the temperature must never cost the other forecasts
            self.ctx.health.incr("weather_errors")
            log.error("weather: the temperature input failed: %s", exc)
            return None, f"temperature input failed: {type(exc).__name__}: {str(exc)[:100]}"

    def calendar_status(self) -> dict:
        """What the server's trainings for this house take from it (the status API's `calendar`; `weather`: the
        temperature input, null without one — then the house gets no weather bundles)."""
        return {"holidays": self.fc.holidays or None, "timezone": self.fc.timezone,
                "weather": self.weather.status() if self.weather is not None else None}

    def skill_status(self) -> dict:
        """The live figures and the guard's verdicts (the status API; docs/edge-models.md)."""
        serving = {}
        for horizon in HORIZONS:
            best = self.best(self.last_results, horizon)
            serving[str(horizon)] = None if best is None else {
                "name": best.name, "model": best.model, "version": best.version, "fallback_reason": best.fallback or None}
        return {"skill": self.skill.status(), "guard": self.guard.status() | {"serving": serving}}

    def discovery_components(self) -> dict[str, dict]:
        """Home Assistant: the consumption forecasts, the live skill, the away switch (edge_agent/publish/hass.py)."""
        pub = self.config.publish
        away = {"away": switch_component(pub.node_id, pub.topic_prefix)} if self.away else {}
        return hass.forecast_components(pub.node_id, pub.topic_prefix) \
            | hass.skill_components(pub.node_id, pub.topic_prefix) | away

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.away is not None:
            self.away.start()
        if self.weather is not None:
            self.weather.start()

    def stop(self) -> None:
        if self.away is not None:
            self.away.stop()
        if self.weather is not None:
            self.weather.stop()
        self.storage.close()


SPEC = ComponentSpec("forecast", parse_config, Forecaster)
