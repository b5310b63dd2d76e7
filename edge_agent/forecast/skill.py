"""Live skill: every cycle, score the forecasts whose target slots are now known against naive baselines on the
same slots, and keep rolling 1-, 7- and 30-day figures (issue 16).

What is scored (a *family* per horizon):
- next slot (horizon 1): the `rolling` forecasts — each target was forecast once, 15 minutes ahead; baselines
  persistence, the same slot yesterday and last week, the 7-day median;
- day ahead (horizon 96): the `day_ahead` series (the 96 slots after the daily issue at `day_ahead_at`), never the
  rolling horizon-96 values, most of which were issued minutes before their target; baselines yesterday, last
  week, the 7-day median (persistence a day ahead is no baseline anyone would use).
Per bundle name and version (every model forecast in the database, also one the guard keeps in the shadow) and per
baseline: MAE, RMSE, bias (forecast − actual), slots scored; for a model also its skill, 1 − MAE / MAE of the best
baseline, both taken on the slots where the model and that baseline were scored (`skill_slots`).

Baselines are computed here, at scoring time, from the consumption series the cycle has just read, each with only
the slots ending at or before the forecast's issue time (`shared.baselines`, the code the fallback serves). Why
not store their forecasts: they are a function of the series, so storing them would duplicate it; computing them
scores every slot whose consumption is known, also for forecasts issued before this version; and the cycle holds
the series anyway (8 days: the last week's baselines of a day-ahead issue a day old). The one difference: a late
reading that changes history changes the baseline too — as it would change a model's input.

Storage (`forecast_skill`, shared/schema.py): one point per scored slot and forecaster (`window` = `slot`: error,
actual, issue time; for a forecast with a band whether the actual was inside and the band scale that would have
covered it) — what a restart reads back (30 days) instead of re-scoring — and every cycle the rolling figures
(`window` = `1d`, `7d`, `30d`; time = the cycle's issue time) for dashboards and history.

Band recalibration (shared.intervals): `band_scale(horizon, name)` is the 80 % quantile of the needed scales of
that bundle's forecasts (every version: each slot's need is relative to its own version's band) over the last
RECALIBRATION_DAYS; the forecast loop serves the next band with it.

Cost per cycle: one query for the forecasts of the targets after the last scored slot, a few baseline calls, and
the rolling figures vectorised over a column store of the last 30 days (≤ 2,880 slots per family). A slot whose
consumption is unknown when it is first scored stays unscored. At a (re)start at most the last day is caught up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared import intervals as iv
from shared import schema
from shared.baselines import BASELINES
from shared.points import Point
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries, iso, parse_time_ns
from shared.storage import Storage

log = logging.getLogger(__name__)

DAY_NS = SLOTS_PER_DAY * SLOT_NS
WINDOWS = (("1d", 1), ("7d", 7), ("30d", 30))
KEEP_NS = 30 * DAY_NS  # what is held in memory and read back at a restart
CATCH_UP_NS = DAY_NS  # how far back a (re)started agent scores slots nobody scored
BASELINE = schema.BASELINE_MODEL

Key = tuple[str, str, str]  # (model kind or "baseline", bundle or baseline name, version)


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


class Scorer:
    """Scores each cycle what became known, keeps the ledgers and the latest figures (read by the status API)."""

    def __init__(self, storage: Storage, is_day_ahead_issue: Callable[[int], bool]):
        self.storage = storage
        self.is_day_ahead_issue = is_day_ahead_issue
        self.ledgers = {f.horizon: Ledger() for f in FAMILIES}
        self.cursor: dict[int, int | None] = {f.horizon: None for f in FAMILIES}  # the last target looked at
        self.restored = False
        self.issued_ns: int | None = None  # the cycle the latest figures are for
        self.figures: dict[int, dict[Key, dict[str, Stats]]] = {}
        self._issue_cache: dict[int, bool] = {}
        self.pending: list[Point] | None = None  # a list: score() adds its points here instead of writing them

    # -- one cycle ----------------------------------------------------------------------------------------
    def score(self, issue_ns: int, series: SlotSeries) -> int:
        """Score the slots that ended since the last cycle (up to issue_ns), write them and the rolling figures;
        returns how many slots were scored. Raises on a database error: a failed query commits nothing (the slots
        are scored next cycle); after a failed write the figures stand in memory, only a restart misses them."""
        if not self.restored:
            self.restore(issue_ns)
        scored, points = [], []
        # score the targets after the last one looked at (at a (re)start: at most a day back)
        ranges = {f.horizon: lo for f in FAMILIES
                  if (lo := max(self.cursor[f.horizon] or 0, issue_ns - CATCH_UP_NS)) < issue_ns}
        rows = self._forecast_rows(ranges, issue_ns) if ranges else {}
        for fam in FAMILIES:
            if fam.horizon in ranges:
                new = self._score_family(fam, ranges[fam.horizon], issue_ns, series, rows.get(fam.horizon, {}))
                scored.append((fam, new))
        for fam, (targets, issued, actual, errors, covered, needed) in scored:  # every query succeeded: commit
            self.ledgers[fam.horizon].append(targets, issued, actual, errors, covered, needed)
            self.cursor[fam.horizon] = max(self.cursor[fam.horizon] or issue_ns, issue_ns)
            points += self._slot_points(fam, targets, issued, actual, errors, covered, needed)
        for ledger in self.ledgers.values():
            ledger.forget_until(issue_ns - KEEP_NS)
        figures = self.rolling(issue_ns)
        points += self._figure_points(issue_ns, figures)
        self.figures, self.issued_ns = figures, issue_ns
        self._issue_cache = {t: v for t, v in self._issue_cache.items() if t > issue_ns - 3 * DAY_NS}
        if self.pending is not None:  # the forecast loop writes them with its forecasts: one write a cycle
            self.pending.extend(points)
        else:
            self.storage.write(points)
        return sum(len(t) for _, (t, *_rest) in scored)

    def stats(self, horizon: int, key: Key, since_ns: int) -> Stats | None:
        return self.ledgers[horizon].stats(key, since_ns, FAMILY[horizon].baselines)

    def band_scale(self, horizon: int, name: str, issue_ns: int) -> float:
        """What bundle `name`'s band is multiplied with in the cycle issued at issue_ns (shared.intervals)."""
        return self.ledgers[horizon].band_scale(name, issue_ns - iv.RECALIBRATION_DAYS * DAY_NS)

    def rolling(self, issue_ns: int) -> dict[int, dict[Key, dict[str, Stats]]]:
        """Per family and forecaster, the figures over the last 1, 7 and 30 days (windows without slots omitted)."""
        out: dict[int, dict[Key, dict[str, Stats]]] = {}
        for fam in FAMILIES:
            ledger = self.ledgers[fam.horizon]
            per: dict[Key, dict[str, Stats]] = {}
            for key in sorted(ledger.errors):
                windows = {w: st for w, days in WINDOWS
                           if (st := ledger.stats(key, issue_ns - days * DAY_NS, fam.baselines)) is not None}
                if windows:
                    per[key] = windows
            out[fam.horizon] = per
        return out

    def _score_family(self, fam: Family, lo: int, issue_ns: int, series: SlotSeries,
                      rows: dict[Key, dict[int, Row]]):
        """Errors of the models' forecasts (`rows`) and of the baselines for the targets in (lo, issue_ns]."""
        targets = np.arange(lo + SLOT_NS, issue_ns + 1, SLOT_NS, dtype=np.int64)
        idx = (targets - series.start_ns) // SLOT_NS
        actual = np.full(len(targets), np.nan)
        inside = (idx >= 0) & (idx < len(series.values))
        actual[inside] = series.values[idx[inside]]
        pos = {int(t): i for i, t in enumerate(targets)}
        issued = targets - SLOT_NS if fam.horizon == 1 else self._day_ahead_issues(targets, rows, pos)
        errors: dict[Key, np.ndarray] = {}
        covered: dict[Key, np.ndarray] = {}
        needed: dict[Key, np.ndarray] = {}
        for key, values in rows.items():
            value, lo, hi, scale = (np.full(len(targets), np.nan) for _ in range(4))
            for t, (v, _issued, p10, p90, s) in values.items():
                i = pos[t]
                value[i], scale[i] = v, s
                if p10 is not None and p90 is not None:
                    lo[i], hi[i] = p10, p90
            errors[key] = value - actual
            banded = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(actual)
            if banded.any():
                covered[key] = np.where(banded, (lo <= actual) & (actual <= hi), np.nan)
                needed[key] = iv.needed_scale(actual, value, lo, hi, scale)
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
        return (targets[keep], issued[keep], actual[keep], errors,
                {k: c[keep] for k, c in covered.items() if k in errors},
                {k: n[keep] for k, n in needed.items() if k in errors})

    def _day_ahead_issues(self, targets: np.ndarray, rows: dict[Key, dict[int, Row]],
                          pos: dict[int, int]) -> np.ndarray:
        """The day-ahead issue each target belongs to: what its forecasts say, else the schedule (0: none)."""
        issued = np.zeros(len(targets), np.int64)
        for values in rows.values():
            for t, (_v, d, *_interval) in values.items():
                issued[pos[t]] = max(issued[pos[t]], d)
        for i, t in enumerate(targets.tolist()):
            if issued[i]:
                continue
            for d in range(t - SLOT_NS, t - DAY_NS - 1, -SLOT_NS):
                if d not in self._issue_cache:
                    self._issue_cache[d] = self.is_day_ahead_issue(d)
                if self._issue_cache[d]:
                    issued[i] = d
                    break
        return issued

    # -- database -------------------------------------------------------------------------------------------
    def _forecast_rows(self, ranges: dict[int, int], hi: int) -> dict[int, dict[Key, dict[int, Row]]]:
        """The models' forecasts for targets in (ranges[horizon], hi], one request for both families:
        {horizon: {key: {target: (kWh, issue ns, P10, P90, band scale)}}} (P10/P90 None for a forecast without
        interval; band scale 1 for one written before recalibration); slots the away input replaced are left out."""
        rows = select(self.storage, schema.FORECAST, (schema.FORECAST_VALUE_FIELD, schema.FORECAST_ISSUED_FIELD,
                                                      P10, P90, schema.FORECAST_BAND_SCALE_FIELD,
                                                      schema.FORECAST_AWAY_FIELD),
                      [({"horizon": str(h), "issue": FAMILY[h].issue}, {"model": BASELINE}, lo, hi)
                       for h, lo in ranges.items()])
        out: dict[int, dict[Key, dict[int, Row]]] = {}
        for r in rows:
            fam = next((f for f in FAMILIES if str(f.horizon) == r.get("horizon") and f.issue == r.get("issue")), None)
            if fam is None or fam.horizon not in ranges:
                continue
            lo = ranges[fam.horizon]
            value, issued = r.get(schema.FORECAST_VALUE_FIELD), r.get(schema.FORECAST_ISSUED_FIELD)
            if r.get(schema.FORECAST_AWAY_FIELD) is True:  # the empty-house profile, not the model: not its skill
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
                continue
            try:
                d = parse_time_ns(issued) if isinstance(issued, str) else int(r["time"]) - SLOT_NS
            except ValueError:
                continue
            t = int(r["time"])
            if t % SLOT_NS or not (lo < t <= hi) or not (0 < t - d <= fam.horizon * SLOT_NS):
                continue
            key = (str(r.get("model")), str(r.get("name")), str(r.get("version")))
            p10, p90 = _number(r.get(P10)), _number(r.get(P90))
            scale = _number(r.get(schema.FORECAST_BAND_SCALE_FIELD))
            out.setdefault(fam.horizon, {}).setdefault(key, {})[t] = (float(value), d, p10, p90,
                                                                      scale if scale and scale > 0 else 1.0)
        return out

    def restore(self, issue_ns: int) -> None:
        """Read back the slots scored in the last 30 days (across restarts and versions)."""
        rows = select(self.storage, schema.FORECAST_SKILL, (ERROR, ACTUAL, schema.FORECAST_ISSUED_FIELD, COVERED,
                                                            NEEDED),
                      [({"window": SLOT_WINDOW}, {}, issue_ns - KEEP_NS, issue_ns)])
        by_family: dict[int, dict[int, tuple[float, int]]] = {f.horizon: {} for f in FAMILIES}
        errs: dict[int, dict[Key, dict[int, float]]] = {f.horizon: {} for f in FAMILIES}
        covs: dict[int, dict[Key, dict[int, float]]] = {f.horizon: {} for f in FAMILIES}
        needs: dict[int, dict[Key, dict[int, float]]] = {f.horizon: {} for f in FAMILIES}
        for r in rows:
            fam = next((f for f in FAMILIES if str(f.horizon) == r.get("horizon") and f.issue == r.get("issue")), None)
            err, act, issued = r.get(ERROR), r.get(ACTUAL), r.get(schema.FORECAST_ISSUED_FIELD)
            if fam is None or not all(isinstance(v, int | float) for v in (err, act)) or not isinstance(issued, str):
                continue
            t = int(r["time"])
            by_family[fam.horizon][t] = (float(act), parse_time_ns(issued))
            key = (str(r.get("model")), str(r.get("name")), str(r.get("version")))
            errs[fam.horizon].setdefault(key, {})[t] = float(err)
            if isinstance(r.get(COVERED), bool):
                covs[fam.horizon].setdefault(key, {})[t] = float(r[COVERED])
            if (need := _number(r.get(NEEDED))) is not None:
                needs[fam.horizon].setdefault(key, {})[t] = need
        for fam in FAMILIES:
            slots = by_family[fam.horizon]
            if not slots:
                continue
            targets = np.array(sorted(slots), np.int64)
            pos = {int(t): i for i, t in enumerate(targets)}
            columns: tuple[dict[Key, np.ndarray], ...] = ({}, {}, {})
            for column, source in zip(columns, (errs[fam.horizon], covs[fam.horizon], needs[fam.horizon]),
                                      strict=True):
                for key, values in source.items():
                    e = np.full(len(targets), np.nan)
                    for t, v in values.items():
                        e[pos[t]] = v
                    column[key] = e
            ledger = Ledger()
            ledger.append(targets, np.array([slots[t][1] for t in targets.tolist()], np.int64),
                          np.array([slots[t][0] for t in targets.tolist()]), *columns)
            self.ledgers[fam.horizon] = ledger
            self.cursor[fam.horizon] = int(targets[-1])
        self.restored = True
        n = sum(len(x) for x in self.ledgers.values())
        if n:
            log.info("skill: read back %d scored slots of the last 30 days", n)

    def _slot_points(self, fam: Family, targets: np.ndarray, issued: np.ndarray, actual: np.ndarray,
                     errors: dict[Key, np.ndarray], covered: dict[Key, np.ndarray],
                     needed: dict[Key, np.ndarray]) -> list[Point]:
        out = []
        for key, err in errors.items():
            tags = _tags(fam, key, SLOT_WINDOW)
            cov = covered.get(key, np.full(len(err), np.nan)).tolist()
            need = needed.get(key, np.full(len(err), np.nan)).tolist()
            for t, d, a, e, c, n in zip(targets.tolist(), issued.tolist(), actual.tolist(), err.tolist(), cov,
                                        need, strict=True):
                if np.isfinite(e):
                    fields: dict = {ERROR: float(e), ACTUAL: float(a), schema.FORECAST_ISSUED_FIELD: iso(d)}
                    if np.isfinite(c):
                        fields[COVERED] = bool(c)
                    if not np.isnan(n):  # inf (a band without width on that side) is stored as NEEDED_MAX
                        fields[NEEDED] = min(float(n), NEEDED_MAX)
                    out.append(Point(schema.FORECAST_SKILL, tags, fields, t))
        return out

    @staticmethod
    def _figure_points(issue_ns: int, figures: dict[int, dict[Key, dict[str, Stats]]]) -> list[Point]:
        out = []
        for horizon, per in figures.items():
            for key, windows in per.items():
                for window, st in windows.items():
                    fields: dict = {"mae_kwh": st.mae, "rmse_kwh": st.rmse, "bias_kwh": st.bias, "slots": st.slots}
                    if st.baseline is not None:
                        fields |= {"baseline": st.baseline, "baseline_mae_kwh": st.baseline_mae,
                                   "skill_slots": st.skill_slots}
                        if st.skill is not None:
                            fields["skill"] = st.skill
                    if st.coverage_slots:
                        fields |= {"p10_p90_coverage": st.coverage, "coverage_slots": st.coverage_slots}
                    out.append(Point(schema.FORECAST_SKILL, _tags(FAMILY[horizon], key, window), fields, issue_ns))
        return out

    # -- what the status API shows ----------------------------------------------------------------------
    def status(self) -> dict:
        """{"issued_at", "horizons": {"1": {"issue", "scored_until", "forecasters": [{"model", "name", "version",
        "windows": {"1d": stats | null, "7d": …, "30d": …}}]}, "96": …}} (docs/edge-models.md)."""
        figures, issued = self.figures, self.issued_ns
        horizons = {}
        for fam in FAMILIES:
            cursor = self.cursor[fam.horizon]
            forecasters = [{"model": k[0], "name": k[1], "version": k[2],
                            "windows": {w: (st.to_dict() if (st := windows.get(w)) else None) for w, _ in WINDOWS}}
                           for k, windows in figures.get(fam.horizon, {}).items()]
            horizons[str(fam.horizon)] = {"issue": fam.issue, "scored_until": iso(cursor) if cursor else None,
                                          "forecasters": forecasters}
        return {"issued_at": iso(issued) if issued else None, "horizons": horizons}


ERROR, ACTUAL, COVERED, NEEDED = "error_kwh", "actual_kwh", "in_p10_p90", "band_need"
NEEDED_MAX = 1000.0  # line protocol has no inf; far above any scale the recalibration uses
P10, P90 = "p10_kwh", "p90_kwh"  # a forecast's interval, when its bundle has one
SLOT_WINDOW = "slot"
Row = tuple[float, int, float | None, float | None, float]  # a model's forecast: kWh, issue ns, P10, P90, scale


def _number(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) else None


def _tags(fam: Family, key: Key, window: str) -> dict[str, str]:
    return {"horizon": str(fam.horizon), "issue": fam.issue, "model": key[0], "name": key[1], "version": key[2],
            "window": window}


def select(storage: Storage, measurement: str, fields: tuple[str, ...],
           queries: list[tuple[dict[str, str], dict[str, str], int, int]]) -> list[dict]:
    """Rows (time in ns, the series' tags, the fields) for each (tags equal, tags not equal, lo, hi) with
    lo < time <= hi: InfluxQL statements in one request on 1.x, Flux on 2.x (the Flux form is untested: no
    InfluxDB 2.x server runs on the development machine)."""
    tags = ("horizon", "issue", "model", "name", "version")
    if getattr(getattr(storage, "config", None), "version", 1) == 2:
        q = lambda v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
        rows = []
        for equal, not_equal, lo, hi in queries:
            cond = [f"r._measurement == {q(measurement)}", "(" + " or ".join(f"r._field == {q(f)}" for f in fields) + ")"]
            cond += [f"r[{q(k)}] == {q(v)}" for k, v in equal.items()]
            cond += [f"r[{q(k)}] != {q(v)}" for k, v in not_equal.items()]
            bucket = storage.bucket_of(measurement) if hasattr(storage, "bucket_of") else storage.bucket
            rows += storage.query(f"from(bucket: {q(bucket)}) |> range(start: time(v: {lo + 1}), "
                                  f"stop: time(v: {hi + 1})) |> filter(fn: (r) => {' and '.join(cond)})"
                                  ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")')
        return rows
    lit = lambda v: "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"  # noqa: E731
    sel = ", ".join(f'"{f}"' for f in fields)
    group = ", ".join(f'"{t}"' for t in tags)
    statements = []
    for equal, not_equal, lo, hi in queries:
        cond = [f'"{k}" = {lit(v)}' for k, v in equal.items()] + [f'"{k}" != {lit(v)}' for k, v in not_equal.items()]
        cond += [f"time > {lo}", f"time <= {hi}"]
        statements.append(f'SELECT {sel} FROM {storage.source(measurement)} WHERE {" AND ".join(cond)} GROUP BY {group}')
    return storage.query("; ".join(statements))
