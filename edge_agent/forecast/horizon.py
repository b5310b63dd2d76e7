"""The forecast core: for one horizon of one cycle, which forecasts are made and which one serves, and why — without
I/O (no storage, no MQTT, no clock: the issue time is given).

Like OpenSTEF's pipeline core, the component (edge_agent/forecast/component.py) reads the inputs — the consumption
series, the loaded models, the temperature as known at the issue time (or why there is none), the guard's verdicts,
each bundle's band recalibration — calls `decide` per horizon, and writes and publishes what comes back. The health
counters and the failures to log come back as data (`Decision.counters`, `Decision.failed`), so the decisions can be
checked without influxd, a broker or the agent.

Per horizon:
1. every model of the horizon runs on the series (a weather bundle only with a temperature input: else its reason
   is the temperature's provenance, e.g. why the forecast is stale); one that raises or gives a non-finite value,
   or whose window is incomplete, does not forecast — one model failing never costs the others their forecasts;
2. a model the guard keeps in the shadow is written (shadow = true) and scored, not served;
3. a weather bundle that did not forecast leaves its twin (the bundle of the same kind without the temperature)
   serving, whose `fallback` then says why (`mark_stand_ins`);
4. with no model serving, a baseline serves with every reason as its `fallback`: the one a shadowed model lost to,
   else the horizon's fallback order (shared.baselines.fallback). Its `input_complete` is False when the
   consumption window had a gap (a gap in the temperature alone is not one in the baseline's input) or the intended
   baseline lacked its history and another stood in;
5. without even a baseline's history (a fresh install: a day-ahead forecast needs a day) the horizon is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge_agent.forecast.guard import Guard
from shared import schema
from shared.baselines import BASELINES, FALLBACK, fallback
from shared.inference import Forecast
from shared.series import SlotSeries
from shared.window import WindowSpec

HORIZONS = (1, schema.SLOTS_PER_DAY)  # next slot, day ahead


class Model(Protocol):
    """What the core needs of a loaded bundle (shared.inference.LoadedModel)."""

    manifest: dict
    spec: WindowSpec

    @property
    def needs_temperature(self) -> bool: ...

    def predict(self, series: SlotSeries, issue_ns: int, band_scale: float = 1.0,
                temperature: SlotSeries | None = None) -> Forecast: ...


@dataclass
class HorizonResult:
    name: str
    model: str
    version: str
    horizon: int
    values: np.ndarray
    fallback: str = ""  # why a baseline was served ("" for a model's forecast)
    input_complete: bool = True
    shadow: bool = False  # a model the guard keeps out of service: written and scored, not served
    p10: np.ndarray | None = None  # the band (kWh; NaN where unknown), None without one
    p90: np.ndarray | None = None
    band_scale: float = 1.0  # the band's recalibration (shared.intervals), from the live scoring
    away: np.ndarray | None = None  # bool per slot: the empty-house profile replaced the forecast
    cost: np.ndarray | None = None  # value × the target slot's import price ([tariff]; NaN where none is known)
    temperature: str = ""  # a weather bundle's temperature input: which forecast (and measurement) it was given


@dataclass
class Decision:
    """One horizon's outcome: what is written (served first, then the shadowed models) and what to count and log."""

    horizon: int
    results: list[HorizonResult] = field(default_factory=list)
    counters: list[str] = field(default_factory=list)  # health counters, one increment each, in order
    failed: list[tuple[str, Exception]] = field(default_factory=list)  # bundles that raised: the component logs
    reasons: list[str] = field(default_factory=list)  # why models did not serve (the baseline's `fallback`)
    skipped: bool = False  # nothing forecast: no model served and no baseline had the history

    @property
    def served(self) -> list[HorizonResult]:
        return [r for r in self.results if not r.shadow]


def decide(horizon: int, series: SlotSeries, issue_ns: int, models: Mapping[str, Model],
           temperature: SlotSeries | None, source: str, guard: Guard,
           band_scale: Callable[[str], float]) -> Decision:
    """The forecasts of `horizon` issued at issue_ns (module docstring: the order of the fallbacks).

    `temperature`/`source`: the temperature as known at issue_ns and its provenance, or None and why not;
    `guard`: its verdicts (who is in the shadow, the baseline it lost to), judged before this call;
    `band_scale(name)`: the bundle's band recalibration from its live scoring (asked only of bundles with a band)."""
    d = Decision(horizon)
    made, complete = [], True
    for name, model in sorted(models.items()):
        if model.spec.horizon != horizon:
            continue
        if model.needs_temperature and temperature is None:
            d.counters.append("weather_unavailable")
            d.reasons.append(f"{name}: {source}")
            continue
        try:
            scale = band_scale(name) if "intervals" in model.manifest else 1.0
            given = {"temperature": temperature} if model.needs_temperature else {}
            fc = model.predict(series, issue_ns, band_scale=scale, **given)
            if not np.all(np.isfinite(fc.values)):
                raise ValueError("non-finite forecast")
        except Exception as exc:  # one model failing must not cost the others their forecasts
            d.counters.append("inference_errors")
            d.failed.append((name, exc))
            d.reasons.append(f"{name}: {type(exc).__name__}: {str(exc)[:100]}")
            continue
        if not fc.complete:
            d.counters.append("incomplete_windows")
            d.reasons.append(f"{name}: input window incomplete" + (
                f" (consumption, or the temperature of the last days: {source})" if model.needs_temperature else ""))
            if not model.needs_temperature:  # a gap in the temperature is not one in the baseline's input
                complete = False
            continue
        made.append(HorizonResult(name, model.manifest["kind"], model.manifest["version"], horizon, fc.values,
                                  p10=fc.p10, p90=fc.p90, band_scale=scale,
                                  temperature=source if model.needs_temperature else ""))
    served, shadow = apply_guard(made, guard, d.reasons)
    mark_stand_ins(served, d.reasons)
    if served:
        d.counters.append(f"forecast_model_{horizon}")
    else:
        reason = "; ".join(d.reasons) if d.reasons else "no model"
        base_name, values, intended = choose_baseline(series, issue_ns, horizon, guard.baseline(horizon))
        if np.isfinite(values).all():
            served.append(HorizonResult(f"baseline-{horizon}", schema.BASELINE_MODEL, base_name, horizon, values,
                                        fallback=reason, input_complete=complete and intended))
            d.counters.append(f"forecast_baseline_{horizon}")
        else:
            d.counters.append("forecast_skipped_no_data")
            d.skipped = True
    d.results = served + shadow
    return d


def apply_guard(made: list[HorizonResult], guard: Guard,
                reasons: list[str]) -> tuple[list[HorizonResult], list[HorizonResult]]:
    """Split a horizon's forecasts into served and shadowed ones; the guard's reasons join `reasons`."""
    served, shadow = [], []
    for r in made:
        verdict = guard.shadowed(r.name, r.version)
        if verdict is None:
            served.append(r)
        else:
            shadow.append(dataclasses.replace(r, shadow=True))
            reasons.append(verdict.reason or "guard")
    return served, shadow


def choose_baseline(series: SlotSeries, issue_ns: int, horizon: int,
                    lost_to: str | None) -> tuple[str, np.ndarray, bool]:
    """The baseline to serve — `lost_to` (the one a shadowed model lost to), else the horizon's fallback order — and
    whether it is the intended one (False: its history was missing and another stood in: incomplete input)."""
    if lost_to in BASELINES:
        values = BASELINES[lost_to](series, issue_ns, horizon)
        if np.isfinite(values).all():
            return lost_to, values, True
    served, values = fallback(series, issue_ns, horizon)
    return served, values, served == (lost_to if lost_to in BASELINES else FALLBACK.get(horizon))


# -- which forecast serves ---------------------------------------------------------------------------------------------
def is_weather(name: str) -> bool:
    return name.endswith(schema.WEATHER_SUFFIX)


def mark_stand_ins(made: list[HorizonResult], reasons: list[str]) -> None:
    """A weather bundle that did not forecast (its reason in `reasons`): its twin's forecast says why it serves
    instead (`fallback`), in place."""
    for r in made:
        if is_weather(r.name) or any(m.name == r.name + schema.WEATHER_SUFFIX for m in made):
            continue
        why = next((x for x in reasons if x.startswith(r.name + schema.WEATHER_SUFFIX + ":")), None)
        if why is not None:
            r.fallback = f"{why}; served without the temperature"


def served_first(results: list[HorizonResult]) -> list[HorizonResult]:
    """Per model kind and horizon, the weather bundle's forecast before its twin's (what is published)."""
    return sorted(results, key=lambda r: (r.horizon, r.model, not is_weather(r.name)))


def best(results: list[HorizonResult], horizon: int, preferred_kinds: list[str]) -> HorizonResult | None:
    """The forecast `<prefix>/forecast/best/<horizon>` carries: the preferred kind's (a weather bundle's before its
    twin's), else the baseline; never a shadowed one."""
    candidates = [r for r in results if r.horizon == horizon and not r.shadow]
    order = {k: i for i, k in enumerate(preferred_kinds + [schema.BASELINE_MODEL])}
    return min(served_first(candidates), key=lambda r: order.get(r.model, 99), default=None)
