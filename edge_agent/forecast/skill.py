"""Live skill, the storage side: every cycle, read the forecasts whose target slots are now known, score them
(edge_agent/forecast/scoring.py: the families, the baselines, the ledger and its statistics, without I/O) and
write what was scored; at a (re)start read the scored slots back (issue 16).

Storage (`forecast_skill`, shared/schema.py): one point per scored slot and forecaster (`window` = `slot`: error,
actual, issue time; for a forecast with a band whether the actual was inside and the band scale that would have
covered it) — what a restart reads back (30 days) instead of re-scoring — and every cycle the rolling figures
(`window` = `1d`, `7d`, `30d`; time = the cycle's issue time) for dashboards and history.

Cost per cycle: one query for the forecasts of the targets after the last scored slot, a few baseline calls, and
the rolling figures (scoring.py). A slot whose consumption is unknown when it is first scored stays unscored. At a
(re)start at most the last day is caught up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from edge_agent.forecast.scoring import (
    BASELINE,
    CATCH_UP_NS,
    DAY_NS,
    FAMILIES,
    FAMILY,
    KEEP_NS,
    WINDOWS,
    Family,
    Key,
    Ledger,
    Row,
    Scored,
    Stats,
    rolling,
    score_family,
)
from shared import intervals as iv
from shared import schema
from shared.points import Point
from shared.schema import SLOT_NS
from shared.series import SlotSeries, iso, parse_time_ns
from shared.storage import Storage

log = logging.getLogger(__name__)


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
                scored.append((fam, score_family(fam, ranges[fam.horizon], issue_ns, series,
                                                 rows.get(fam.horizon, {}), self._is_day_ahead_issue)))
        for fam, new in scored:  # every query succeeded: commit
            self.ledgers[fam.horizon].append(new.targets, new.issued, new.actual, new.errors, new.covered, new.needed)
            self.cursor[fam.horizon] = max(self.cursor[fam.horizon] or issue_ns, issue_ns)
            points += self._slot_points(fam, new)
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
        return sum(len(new.targets) for _, new in scored)

    def stats(self, horizon: int, key: Key, since_ns: int) -> Stats | None:
        return self.ledgers[horizon].stats(key, since_ns, FAMILY[horizon].baselines)

    def band_scale(self, horizon: int, name: str, issue_ns: int) -> float:
        """What bundle `name`'s band is multiplied with in the cycle issued at issue_ns (shared.intervals)."""
        return self.ledgers[horizon].band_scale(name, issue_ns - iv.RECALIBRATION_DAYS * DAY_NS)

    def rolling(self, issue_ns: int) -> dict[int, dict[Key, dict[str, Stats]]]:
        """Per family and forecaster, the figures over the last 1, 7 and 30 days (windows without slots omitted)."""
        return rolling(self.ledgers, issue_ns)

    def _is_day_ahead_issue(self, issue_ns: int) -> bool:
        """The schedule's answer, cached (scoring a day-ahead family asks it for up to 96 times per target)."""
        if issue_ns not in self._issue_cache:
            self._issue_cache[issue_ns] = self.is_day_ahead_issue(issue_ns)
        return self._issue_cache[issue_ns]

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

    def _slot_points(self, fam: Family, new: Scored) -> list[Point]:
        out = []
        for key, err in new.errors.items():
            tags = _tags(fam, key, SLOT_WINDOW)
            cov = new.covered.get(key, np.full(len(err), np.nan)).tolist()
            need = new.needed.get(key, np.full(len(err), np.nan)).tolist()
            for t, d, a, e, c, n in zip(new.targets.tolist(), new.issued.tolist(), new.actual.tolist(),
                                        err.tolist(), cov, need, strict=True):
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
