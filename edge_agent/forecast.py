"""Forecast loop: every 15 minutes (+ a delay for late data) run every active bundle on the consumption series.

Writes `forecast` points (time = target time; tags model, version, horizon, name; fields value_kwh, issued_at)
and publishes retained JSON on `<prefix>/forecast/<kind>/<horizon>` (kind cnn, lstm, baseline, and `best`: the
preferred model that produced a forecast). Without a model, or when the input window has gaps, the horizon's
naive baseline is used and tagged model=baseline. Errors are counted and logged; they never stop the agent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from edge_agent.config import AgentConfig, ConfigError, build_dataclass
from edge_agent.inference import LoadedModel
from edge_agent.interpreter import runtime
from edge_agent.models.store import ModelStore
from edge_agent.schedule import floor_slot, next_run
from shared import schema
from shared.baselines import fallback
from shared.points import Point
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import Readings, SlotSeries, counter_to_slots, iso, power_to_slots

log = logging.getLogger(__name__)


@dataclass
class ForecastConfig:
    enabled: bool = True
    source: str = "counter"  # counter (kWh), power (W) or slots (kWh per slot, e.g. energy_flow house)
    measurement: str = "EnergyMeter"
    field: str = "EnergyIn"
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 60.0
    topic_prefix: str = "home-energy"
    ha_discovery: bool = True
    discovery_prefix: str = "homeassistant"
    node_id: str = "edge"
    models_dir: str = "models"
    preferred_kinds: list[str] = dataclasses.field(default_factory=lambda: ["cnn", "lstm"])


def parse_config(cfg: AgentConfig) -> ForecastConfig:
    fc = build_dataclass(ForecastConfig, cfg.section("forecast"), f"{cfg.path}: [forecast]")
    if fc.source not in ("counter", "power", "slots"):
        raise ConfigError(f"{cfg.path}: [forecast].source must be counter, power or slots")
    return fc


def validate_config(cfg: AgentConfig) -> None:
    if "forecast" in cfg.raw:
        parse_config(cfg)


@dataclass
class HorizonResult:
    name: str
    model: str
    version: str
    horizon: int
    values: np.ndarray


class Forecaster:
    def __init__(self, config: AgentConfig, fc: ForecastConfig, ctx):
        self.config, self.fc, self.ctx = config, fc, ctx
        self.storage = ctx.storage
        self.store = ModelStore(config.resolve(fc.models_dir))
        self.runtime = runtime()
        self.models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_forecast: str | None = None
        self.last_results: list[HorizonResult] = []
        for name in self.store.names():
            self.reload(name)

    # -- models -------------------------------------------------------------------------------------------
    def reload(self, name: str) -> None:
        entry = self.store.active(name)
        if entry is None:
            with self._lock:
                self.models.pop(name, None)
            return
        try:
            doc, data = self.store.files(entry)
            model = LoadedModel(doc, data, self.runtime)
        except Exception as exc:
            log.error("cannot load %s %s: %s", name, entry.version, exc)
            self.ctx.health.incr("model_load_errors")
            return
        with self._lock:
            self.models[name] = model
        log.info("model %s version %s active (%s)", name, entry.version, self.runtime)

    # -- input --------------------------------------------------------------------------------------------
    def history_slots(self) -> int:
        with self._lock:
            needed = [m.spec.history_slots for m in self.models.values()]
        return max(needed + [8 * SLOTS_PER_DAY + 40])

    def read_series(self, issue_ns: int) -> SlotSeries:
        """Consumption slots ending at or before issue_ns, enough for every active model and the baselines."""
        n = self.history_slots()
        start_ns = issue_ns - (n - 1) * SLOT_NS
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
        readings = Readings.from_rows(rows)
        convert = counter_to_slots if self.fc.source == "counter" else power_to_slots
        return convert(readings, start_ns=start_ns, end_ns=issue_ns)

    # -- one cycle ----------------------------------------------------------------------------------------
    def run_once(self, issue_ns: int | None = None) -> list[HorizonResult]:
        """Forecast for the slots after issue_ns (default: the last slot boundary), write and publish."""
        issue_ns = issue_ns if issue_ns is not None else floor_slot(self.ctx.clock())
        t0 = time.perf_counter()
        try:
            series = self.read_series(issue_ns)
        except Exception as exc:
            self.ctx.health.incr("forecast_errors")
            log.error("forecast: cannot read the consumption series: %s", exc)
            series = SlotSeries(issue_ns, np.full(1, np.nan))
        with self._lock:
            models = dict(self.models)
        results: list[HorizonResult] = []
        for horizon in (1, 96):
            made = []
            for name, model in sorted(models.items()):
                if model.spec.horizon != horizon:
                    continue
                try:
                    fc = model.predict(series, issue_ns)
                except Exception as exc:
                    self.ctx.health.incr("inference_errors")
                    log.error("forecast: %s failed: %s", name, exc)
                    continue
                if not fc.complete:
                    self.ctx.health.incr("incomplete_windows")
                    continue
                made.append(HorizonResult(name, model.manifest["kind"], model.manifest["version"], horizon,
                                          fc.values))
            if not made:
                base_name, values = fallback(series, issue_ns, horizon)
                if np.isfinite(values).all():
                    made.append(HorizonResult(f"baseline-{horizon}", schema.BASELINE_MODEL, base_name, horizon,
                                              values))
                else:
                    self.ctx.health.incr("forecast_skipped_no_data")
                    log.warning("forecast: no model and no history for horizon %d at %s", horizon, iso(issue_ns))
            results.extend(made)
        self._write(issue_ns, results)
        self._publish(issue_ns, results)
        self.last_forecast = iso(issue_ns)
        self.last_results = results
        self.ctx.health.incr("forecast_cycles")
        self.ctx.health.set("forecast_cycle_ms", round((time.perf_counter() - t0) * 1000, 1))
        return results

    def _write(self, issue_ns: int, results: list[HorizonResult]) -> None:
        issued = iso(issue_ns)
        points = [Point(schema.FORECAST, {"model": r.model, "version": r.version, "horizon": str(r.horizon),
                                          "name": r.name},
                        {schema.FORECAST_VALUE_FIELD: float(v), schema.FORECAST_ISSUED_FIELD: issued},
                        issue_ns + (k + 1) * SLOT_NS)
                  for r in results for k, v in enumerate(r.values)]
        try:
            self.storage.write(points)
            self.ctx.health.incr("forecast_points", len(points))
        except Exception as exc:
            self.ctx.health.incr("forecast_errors")
            log.error("forecast: writing %d points failed: %s", len(points), exc)

    def _payload(self, issue_ns: int, r: HorizonResult) -> str:
        return json.dumps({"issued_at": iso(issue_ns), "name": r.name, "model": r.model, "version": r.version,
                           "horizon": r.horizon, "unit": "kWh", "next_kwh": round(float(r.values[0]), 4),
                           "total_kwh": round(float(np.sum(r.values)), 3),
                           "first_target": iso(issue_ns + SLOT_NS),
                           "values": [round(float(v), 4) for v in r.values]})

    def _publish(self, issue_ns: int, results: list[HorizonResult]) -> None:
        prefix = self.fc.topic_prefix
        try:
            for r in results:
                self.ctx.publish(f"{prefix}/forecast/{r.model}/{r.horizon}", self._payload(issue_ns, r), qos=1,
                                 retain=True)
            for horizon in (1, 96):
                best = self.best(results, horizon)
                if best:
                    self.ctx.publish(f"{prefix}/forecast/best/{horizon}", self._payload(issue_ns, best), qos=1,
                                     retain=True)
        except Exception as exc:
            self.ctx.health.incr("publish_errors")
            log.error("forecast: publishing failed: %s", exc)

    def best(self, results: list[HorizonResult], horizon: int) -> HorizonResult | None:
        candidates = [r for r in results if r.horizon == horizon]
        order = {k: i for i, k in enumerate(self.fc.preferred_kinds + [schema.BASELINE_MODEL])}
        return min(candidates, key=lambda r: order.get(r.model, 99), default=None)

    def discovery_messages(self) -> list[tuple[str, str]]:
        """Home Assistant MQTT discovery configs for the two consumption sensors."""
        node, prefix = self.fc.node_id, self.fc.topic_prefix
        device = {"identifiers": [f"home-energy-{node}"], "name": f"Home energy ({node})",
                  "manufacturer": "home-energy", "model": "edge agent"}
        sensors = [("consumption_next_15min", "Consumption next 15 min", 1, "{{ value_json.next_kwh }}"),
                   ("consumption_next_24h", "Consumption next 24 h", 96, "{{ value_json.total_kwh }}")]
        out = []
        for object_id, name, horizon, template in sensors:
            cfg = {"name": name, "unique_id": f"{node}_{object_id}", "object_id": f"{node}_{object_id}",
                   "state_topic": f"{prefix}/forecast/best/{horizon}", "value_template": template,
                   "unit_of_measurement": "kWh", "device_class": "energy", "state_class": "total",
                   "json_attributes_topic": f"{prefix}/forecast/best/{horizon}",
                   "json_attributes_template": "{{ {'issued_at': value_json.issued_at, "
                                               "'model': value_json.model, 'version': value_json.version} | tojson }}",
                   "device": device}
            out.append((f"{self.fc.discovery_prefix}/sensor/{node}/{object_id}/config", json.dumps(cfg)))
        return out

    # -- schedule -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            due = next_run(self.ctx.clock(), self.fc.delay_s)
            while not self._stop.is_set() and self.ctx.clock() < due:
                self._stop.wait(min(1.0, max(0.01, (due - self.ctx.clock()).total_seconds())))
            if self._stop.is_set():
                return
            try:
                self.run_once(floor_slot(due))
            except Exception:
                self.ctx.health.incr("forecast_errors")
                log.exception("forecast cycle failed")

    def start(self) -> None:
        if self.fc.ha_discovery:
            for topic, payload in self.discovery_messages():
                self.ctx.publish(topic, payload, qos=1, retain=True)
        self._thread = threading.Thread(target=self._loop, name="forecast", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.storage.close()


def build(config: AgentConfig, ctx) -> Forecaster | None:
    if "forecast" not in config.raw:
        return None
    fc = parse_config(config)
    return Forecaster(config, fc, ctx) if fc.enabled else None
