"""Live skill's arithmetic (issue 16), without I/O: which slots are scored against which baselines, the ledger of
scored slots, and its rolling figures. edge_agent/forecast/skill.py reads the forecasts and writes the results;
everything here is a function of what it is given, so it can be checked against hand-computed values.

What is scored (a *family* per horizon):
- next slot (horizon 1): the `rolling` forecasts — each target was forecast once, 15 minutes ahead; baselines
  persistence, the same slot yesterday and last week, the 7-day median;
- day ahead (horizon 96): the `day_ahead` series (the 96 slots after the daily issue at `day_ahead_at`), never the
  rolling horizon-96 values, most of which were issued minutes before their target; baselines yesterday, last
  week, the 7-day median (persistence a day ahead is no baseline anyone would use).
Per bundle name and version (every model forecast in the database, also one the guard keeps in the shadow) and per
baseline: MAE, RMSE, bias (forecast − actual), slots scored; for a model also its skill, 1 − MAE / MAE of the best
baseline, both taken on the slots where the model and that baseline were scored (`skill_slots`).

Baselines are computed at scoring time from the consumption series the cycle has just read, each with only the
slots ending at or before the forecast's issue time (`shared.baselines`, the code the fallback serves). Why not
store their forecasts: they are a function of the series, so storing them would duplicate it; computing them scores
every slot whose consumption is known, also for forecasts issued before this version; and the cycle holds the
series anyway (8 days: the last week's baselines of a day-ahead issue a day old). The one difference: a late
reading that changes history changes the baseline too — as it would change a model's input.

Band recalibration (shared.intervals): `Ledger.band_scale` is the 80 % quantile of the needed scales of a bundle's
forecasts (every version: each slot's need is relative to its own version's band) over the last
RECALIBRATION_DAYS; the forecast loop serves the next band with it.

Cost: the rolling figures are vectorised over a column store of the last 30 days (≤ 2,880 slots per family).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared import intervals as iv
from shared import schema
from shared.baselines import BASELINES
from shared.schema import DAY_NS, SLOT_NS
from shared.series import SlotSeries

WINDOWS = (("1d", 1), ("7d", 7), ("30d", 30))
KEEP_NS = 30 * DAY_NS  # what is held in memory and read back at a restart
CATCH_UP_NS = DAY_NS  # how far back a (re)started agent scores slots nobody scored
BASELINE = schema.BASELINE_MODEL

Key = tuple[str, str, str]  # (model kind or "baseline", bundle or baseline name, version)
Row = tuple[float, int, float | None, float | None, float]  # a model's forecast: kWh, issue ns, P10, P90, scale


@dataclass(frozen=True)
class Family:
    horizon: int
    issue: str  # the forecast series scored (the `issue` tag)
    baselines: tuple[str, ...]


FAMILIES = (Family(1, "rolling", ("persistence", "same_slot_yesterday", "same_slot_last_week", "median_7_days")),
            Family(96, "day_ahead", ("same_slot_yesterday", "same_slot_last_week", "median_7_days")))
FAMILY = {f.horizon: f for f in FAMILIES}


def baseline_key(name: str) -> Key:
    """Baselines are stored like the fallback's forecast points: model=baseline, version = the baseline's name."""
    return (BASELINE, name, name)


@dataclass
class Stats:
    slots: int
    mae: float
    rmse: float
    bias: float  # mean of forecast − actual
    # models only: against the best baseline on the slots both were scored on
    skill: float | None = None  # 1 − model_mae / baseline_mae; None without a baseline or when its MAE is 0
    skill_slots: int = 0
    baseline: str | None = None
    model_mae: float | None = None
    baseline_mae: float | None = None
    # forecasts with an interval (p10_kwh/p90_kwh): the share of slots whose actual fell inside [P10, P90]
    coverage: float | None = None
    coverage_slots: int = 0

    def to_dict(self) -> dict:
        r = lambda v, n=4: None if v is None else round(float(v), n)  # noqa: E731
        doc = {"slots": self.slots, "mae_kwh": r(self.mae, 5), "rmse_kwh": r(self.rmse, 5), "bias_kwh": r(self.bias, 5)}
        if self.baseline is not None:
            doc |= {"skill": r(self.skill), "skill_slots": self.skill_slots, "baseline": self.baseline,
                    "baseline_mae_kwh": r(self.baseline_mae, 5)}
        if self.coverage_slots:
            doc |= {"p10_p90_coverage": r(self.coverage), "coverage_slots": self.coverage_slots}
        return doc


@dataclass
class Scored:
    """One family's newly scored slots (sorted targets; every column aligned with them): what the ledger takes
    and what skill.py writes, one point per slot and forecaster."""

    targets: np.ndarray
    issued: np.ndarray
    actual: np.ndarray
    errors: dict[Key, np.ndarray]
    covered: dict[Key, np.ndarray]
    needed: dict[Key, np.ndarray]


class Ledger:
    """The scored slots of one family (the last 30 days) as columns: target, issue time, actual, and per
    forecaster its error (NaN where it was not scored) and, for a forecast with an interval, whether the actual
    fell inside [P10, P90] (1.0 / 0.0, NaN without an interval) and the band scale that would have covered it."""

    def __init__(self) -> None:
        self.targets = np.zeros(0, np.int64)
        self.issued = np.zeros(0, np.int64)
        self.actual = np.zeros(0)
        self.errors: dict[Key, np.ndarray] = {}
        self.covered: dict[Key, np.ndarray] = {}
        self.needed: dict[Key, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.targets)

    def append(self, targets: np.ndarray, issued: np.ndarray, actual: np.ndarray,
               errors: dict[Key, np.ndarray], covered: dict[Key, np.ndarray] | None = None,
               needed: dict[Key, np.ndarray] | None = None) -> None:
        """Slots after the last one held, sorted; `errors` (and `covered`, `needed`) aligned with `targets`."""
        if not len(targets):
            return
        n_old, n_new = len(self.targets), len(targets)
        self.targets = np.concatenate([self.targets, np.asarray(targets, np.int64)])
        self.issued = np.concatenate([self.issued, np.asarray(issued, np.int64)])
        self.actual = np.concatenate([self.actual, np.asarray(actual, float)])
        for column, new_values in ((self.errors, errors), (self.covered, covered or {}), (self.needed, needed or {})):
            for key in set(column) | set(new_values):
                old, new = column.get(key), new_values.get(key)
                column[key] = np.concatenate([np.full(n_old, np.nan) if old is None else old,
                                              np.full(n_new, np.nan) if new is None else new])

    def forget_until(self, t_ns: int) -> None:
        """Drop the slots ending at or before t_ns (and forecasters left without any)."""
        i = int(np.searchsorted(self.targets, t_ns, side="right"))
        if not i:
            return
        self.targets, self.issued, self.actual = self.targets[i:], self.issued[i:], self.actual[i:]
        self.errors = {k: e[i:] for k, e in self.errors.items() if np.isfinite(e[i:]).any()}
        self.covered = {k: c[i:] for k, c in self.covered.items() if k in self.errors}
        self.needed = {k: c[i:] for k, c in self.needed.items() if k in self.errors}

    def band_scale(self, name: str, since_ns: int) -> float:
        """The recalibrated band scale of bundle `name` (all its versions) from the slots ending after since_ns."""
        s = int(np.searchsorted(self.targets, since_ns, side="right"))
        needs = [n[s:] for k, n in self.needed.items() if k[0] != BASELINE and k[1] == name]
        return iv.recalibrated_scale(np.concatenate(needs) if needs else np.zeros(0))

    def stats(self, key: Key, since_ns: int, baselines: tuple[str, ...]) -> Stats | None:
        """Figures of `key` over the slots ending after since_ns (None: none scored)."""
        e = self.errors.get(key)
        if e is None:
            return None
        s = int(np.searchsorted(self.targets, since_ns, side="right"))
        e = e[s:]
        ok = np.isfinite(e)
        n = int(ok.sum())
        if not n:
            return None
        v = e[ok]
        st = Stats(n, float(np.abs(v).mean()), float(np.sqrt((v * v).mean())), float(v.mean()))
        cov = self.covered.get(key)
        if cov is not None:
            c = cov[s:][ok]
            c = c[np.isfinite(c)]
            if len(c):
                st.coverage, st.coverage_slots = float(c.mean()), len(c)
        if key[0] == BASELINE:
            return st
        best = None
        for name in baselines:
            eb = self.errors.get(baseline_key(name))
            if eb is None:
                continue
            eb = eb[s:]
            both = ok & np.isfinite(eb)
            m = int(both.sum())
            if not m:
                continue
            mb, mm = float(np.abs(eb[both]).mean()), float(np.abs(e[both]).mean())
            if best is None or mb < best[1]:
                best = (name, mb, mm, m)
        if best is not None:
            st.baseline, st.baseline_mae, st.model_mae, st.skill_slots = best
            st.skill = 1.0 - best[2] / best[1] if best[1] > 0 else None
        return st


def rolling(ledgers: dict[int, Ledger], issue_ns: int) -> dict[int, dict[Key, dict[str, Stats]]]:
    """Per family and forecaster, the figures over the last 1, 7 and 30 days (windows without slots omitted)."""
    out: dict[int, dict[Key, dict[str, Stats]]] = {}
    for fam in FAMILIES:
        ledger = ledgers[fam.horizon]
        per: dict[Key, dict[str, Stats]] = {}
        for key in sorted(ledger.errors):
            windows = {w: st for w, days in WINDOWS
                       if (st := ledger.stats(key, issue_ns - days * DAY_NS, fam.baselines)) is not None}
            if windows:
                per[key] = windows
        out[fam.horizon] = per
    return out


def score_family(fam: Family, lo: int, issue_ns: int, series: SlotSeries, rows: dict[Key, dict[int, Row]],
                 is_day_ahead_issue: Callable[[int], bool]) -> Scored:
    """Errors of the models' forecasts (`rows`: {key: {target: Row}}) and of the family's baselines for the targets
    in (lo, issue_ns], against the consumption in `series`. Slots whose consumption is unknown, or whose issue
    time is unknown, are left out (and stay unscored); so are forecasters with no error left."""
    targets = np.arange(lo + SLOT_NS, issue_ns + 1, SLOT_NS, dtype=np.int64)
    idx = (targets - series.start_ns) // SLOT_NS
    actual = np.full(len(targets), np.nan)
    inside = (idx >= 0) & (idx < len(series.values))
    actual[inside] = series.values[idx[inside]]
    pos = {int(t): i for i, t in enumerate(targets)}
    issued = targets - SLOT_NS if fam.horizon == 1 else day_ahead_issues(targets, rows, pos, is_day_ahead_issue)
    errors: dict[Key, np.ndarray] = {}
    covered: dict[Key, np.ndarray] = {}
    needed: dict[Key, np.ndarray] = {}
    for key, values in rows.items():
        value, p10, p90, scale = (np.full(len(targets), np.nan) for _ in range(4))
        for t, (v, _issued, lo_kwh, hi_kwh, s) in values.items():
            i = pos[t]
            value[i], scale[i] = v, s
            if lo_kwh is not None and hi_kwh is not None:
                p10[i], p90[i] = lo_kwh, hi_kwh
        errors[key] = value - actual
        banded = np.isfinite(p10) & np.isfinite(p90) & np.isfinite(actual)
        if banded.any():
            covered[key] = np.where(banded, (p10 <= actual) & (actual <= p90), np.nan)
            needed[key] = iv.needed_scale(actual, value, p10, p90, scale)
    for name in fam.baselines:
        err = np.full(len(targets), np.nan)
        by_issue: dict[int, np.ndarray] = {}
        for i, (t, d) in enumerate(zip(targets.tolist(), issued.tolist(), strict=True)):
            if d <= 0 or not np.isfinite(actual[i]):
                continue
            if d not in by_issue:
                by_issue[d] = BASELINES[name](series, d, fam.horizon)
            err[i] = by_issue[d][(t - d) // SLOT_NS - 1] - actual[i]
        errors[baseline_key(name)] = err
    keep = np.isfinite(actual) & (issued > 0)
    errors = {k: e[keep] for k, e in errors.items() if np.isfinite(e[keep]).any()}
    return Scored(targets[keep], issued[keep], actual[keep], errors,
                  {k: c[keep] for k, c in covered.items() if k in errors},
                  {k: n[keep] for k, n in needed.items() if k in errors})


def day_ahead_issues(targets: np.ndarray, rows: dict[Key, dict[int, Row]], pos: dict[int, int],
                     is_day_ahead_issue: Callable[[int], bool]) -> np.ndarray:
    """The day-ahead issue each target belongs to: what its forecasts say, else the schedule (0: none)."""
    issued = np.zeros(len(targets), np.int64)
    for values in rows.values():
        for t, (_v, d, *_interval) in values.items():
            issued[pos[t]] = max(issued[pos[t]], d)
    for i, t in enumerate(targets.tolist()):
        if issued[i]:
            continue
        for d in range(t - SLOT_NS, t - DAY_NS - 1, -SLOT_NS):
            if is_day_ahead_issue(d):
                issued[i] = d
                break
    return issued
