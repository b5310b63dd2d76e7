"""Retention component: the policies, and the per-device 15-minute aggregates computed by the agent.

When: at every slot boundary + `delay_s` the slots that ended since the last run are aggregated (with the slots
whose counters still lacked a reading after their end, for `lookback_slots`). Readings stored late (a device's
buffer, the spool replayed after InfluxDB was down) mark the slots they change, which the next run — triggered a
few seconds later — recomputes. After an outage of the agent the runs catch up from the newest aggregated slot,
`catchup_days` per run; a database without aggregates is aggregated from its oldest raw reading (the migration of
a database that kept everything: energy_flow, forecast and forecast_skill are copied into the keep policy first, and
the raw policy is shortened only when nothing is lost, edge_agent/retention/policies.py).

At start and then hourly (after that run's aggregates) the raw policy's size is held to `raw_max_mb` by dropping its
oldest shard groups under the same rule (edge_agent/retention/budget.py).
"""

from __future__ import annotations

import logging
import threading
import time

from edge_agent.component import AgentContext, ComponentSpec
from edge_agent.config import AgentConfig
from edge_agent.retention import aggregate, budget, policies
from edge_agent.retention.config import RetentionConfig, parse_config
from edge_agent.runtime.timer import floor_slot
from shared.schema import DAY_NS, DEVICE_SLOTS, ENERGY_FLOW, FORECAST, FORECAST_SKILL, SLOT_NS
from shared.series import iso, merge_slot_ranges
from shared.storage import StorageError

log = logging.getLogger(__name__)

CHUNK_SLOTS = 96  # slots per query: a day of 1 s readings is ~86,400 rows per series for InfluxDB to reduce
COPIED = (ENERGY_FLOW, FORECAST, FORECAST_SKILL)
BUDGET_EVERY_NS = 3600 * 10**9  # the raw policy's size is checked at start and then hourly


class Retention:
    def __init__(self, rc: RetentionConfig, ctx: AgentContext):
        self.rc, self.ctx, self.config = rc, ctx, ctx.config
        self.storage = ctx.open_storage()
        self.database = self.config.storage.database
        self._lock = threading.Lock()
        self.until: int | None = None  # newest slot end aggregated
        self._dirty: tuple[int, int] | None = None  # late readings: (oldest, newest) time
        self._incomplete: set[int] = set()
        self._raw_rp: str | None = self.config.storage.retention_policy
        self._policy_state: dict = {"pending": "not checked yet"}
        self._migrated = False
        self._known_counters = self._counters_of_components()
        self.last_run: str | None = None
        self._budget_state: dict = {"raw_max_mb": rc.raw_max_mb or None}
        self._budget_checked: int | None = None  # clock (ns) of the last size check
        self._raw_floor: int | None = None  # end of the newest raw shard dropped: raw readings before it are gone
        ctx.on_stored(self._on_stored)
        ctx.timer.add("retention", rc.delay_s, self._scheduled, at_start=True)

    def _counters_of_components(self) -> set[tuple[str, str]]:
        """Fields the flow and the forecast read as counters are counters here too."""
        out: set[tuple[str, str]] = set()
        for d in self.config.section("flow").get("devices") or []:
            if isinstance(d, dict) and d.get("input", "counter") == "counter":
                out |= {(d.get("measurement"), d[k]) for k in ("import_field", "export_field") if d.get(k)}
        fc = self.config.section("forecast")
        if fc and fc.get("source", "counter") == "counter":
            out.add((fc.get("measurement", "EnergyMeter"), fc.get("field", "EnergyIn")))
        return out

    # -- late data ----------------------------------------------------------------------------------------
    def _on_stored(self, lines: list[bytes]) -> None:
        """Readings older than the newest aggregated slot end change aggregates: mark them (cheap: one split
        per line, in the drainer)."""
        until = self.until
        if until is None:
            return
        lo = hi = None
        for line in lines:
            try:
                t = int(line.rstrip(b"\n").rsplit(b" ", 1)[1])
            except (ValueError, IndexError):
                continue
            if t <= until:
                lo = t if lo is None else min(lo, t)
                hi = t if hi is None else max(hi, t)
        if lo is not None:
            with self._lock:
                if self._dirty:
                    lo, hi = min(lo, self._dirty[0]), max(hi, self._dirty[1])
                self._dirty = (lo, hi)
            self.ctx.timer.trigger("retention", 2.0)

    # -- the job ------------------------------------------------------------------------------------------
    def _scheduled(self, boundary_ns: int) -> None:
        t0 = time.process_time()
        try:
            self.run_once(boundary_ns)
        finally:
            self.ctx.health.set("retention_cpu_ms", round((time.process_time() - t0) * 1000, 1))

    def run_once(self, end_ns: int | None = None) -> int:
        """Policies checked, then the aggregates due up to the slot ending at `end_ns` (default: the last
        boundary); returns how many points were written."""
        end = end_ns if end_ns is not None else floor_slot(self.ctx.clock())
        if self._policy_state.get("pending") or not self._migrated:
            self._policies()
        if not self._policy_state.get("keep_exists"):
            log.warning("retention: no policy %r to keep aggregates in (%s)", self.rc.keep_policy,
                        self._policy_state.get("pending"))
            return 0
        if self.until is None:
            self.until = self._resume_point(end)
        with self._lock:
            dirty, self._dirty = self._dirty, None
            floor = end - self.rc.lookback_slots * SLOT_NS
            self._incomplete = {t for t in self._incomplete if t > floor}
        ranges = []
        start = min([self.until + SLOT_NS, *self._incomplete])
        stop = min(end, start + (max(1, int(self.rc.catchup_days * 96)) - 1) * SLOT_NS)
        if start <= stop:
            ranges.append((start, stop))
        if dirty is not None:
            w = int(self.rc.max_interp_s * 1e9)
            lo = (dirty[0] - w) // SLOT_NS * SLOT_NS + SLOT_NS
            if self._raw_floor is not None:  # a late reading in a dropped shard's range: its slots stay as computed
                lo = max(lo, self._raw_floor + self._window_ns() + SLOT_NS)
            hi = min(((dirty[1] + w) // SLOT_NS + 1) * SLOT_NS, self.until)
            if lo <= hi:
                ranges.append((lo, hi))
        written = 0
        for lo, hi in merge_slot_ranges(ranges):
            written += self.compute_range(lo, hi)
        if start <= stop:
            self.until = max(self.until, stop)
            if stop < end:
                self.ctx.timer.trigger("retention", 0.5)  # more history to catch up: let the other jobs run first
            elif self._policy_state.get("pending"):
                self._policies()  # caught up: the raw policy may be shortened now
        self.last_run = iso(end)
        self.ctx.health.set("retention_until_s", round(self.until / 1e9))
        now_ns = int(self.ctx.clock().timestamp() * 1e9)
        if self.rc.raw_max_mb and (self._budget_checked is None or now_ns - self._budget_checked >= BUDGET_EVERY_NS):
            self._budget_checked = now_ns
            try:
                self.enforce_budget(now_ns)
            except StorageError as exc:
                self._budget_state["pending"] = f"database: {exc}"
                log.warning("retention: raw size check failed: %s", exc)
        return written

    # -- the size budget ------------------------------------------------------------------------------------
    def _window_ns(self) -> int:
        return budget.window_ns(self.rc)

    def enforce_budget(self, now_ns: int | None = None) -> list[budget.Shard]:
        """Drop the raw policy's oldest shard groups while it is above `raw_max_mb` (budget.enforce: each only
        once what lasts covers its whole range); returns those dropped. Without admin rights nothing can be
        measured or dropped here: then the state the admin's `edge-agent raw-budget` (Ansible's hourly timer)
        left in the state directory counts, and when that is missing or stale the `problem` sensor says so."""
        now_ns = now_ns if now_ns is not None else int(self.ctx.clock().timestamp() * 1e9)
        if not self._raw_rp:
            self._budget_state = {"raw_max_mb": self.rc.raw_max_mb, "pending": "raw policy unknown"}
            return []
        dropped, state = budget.enforce(self.storage, self.database, self._raw_rp, self.rc, self.until, now_ns)
        for s in dropped:
            self._raw_floor = max(self._raw_floor or s.end_ns, s.end_ns)
            self.ctx.health.incr("raw_shards_dropped")
        held_from = state.get("held_from_ns")
        if held_from and self._raw_floor is None:
            # after a restart: aggregates older than the oldest raw shard mean that what was before it is gone
            kept = policies.first_time(self.storage, policies.qualified(self.database, self.rc.keep_policy,
                                                                         DEVICE_SLOTS))
            if kept is not None and kept < held_from:
                self._raw_floor = held_from
        state["shards_dropped"] = int(self.ctx.health.get("raw_shards_dropped") or 0)
        if state.get("pending") == budget.NEEDS_ADMIN:
            state = budget.read_state(self.config.state_dir) or state
        self._budget_state = state
        if "raw_bytes" in state:
            self.ctx.health.set("raw_bytes", state["raw_bytes"])
        return dropped

    def budget_problem(self) -> str | None:
        """For the `problem` sensor: why raw readings may grow past `raw_max_mb` (None: they do not)."""
        return budget.problem(self._budget_state, self.rc.raw_max_mb, int(self.ctx.clock().timestamp() * 1e9))

    def compute_range(self, first_end: int, last_end: int) -> int:
        """Aggregate the slots ending in [first_end, last_end] (every device measurement) and write them."""
        written = 0
        raw_measurements = policies.device_measurements(self.storage, self.database, self._raw_rp, self.rc.exclude)
        for m in raw_measurements:
            source = policies.qualified(self.database, self._raw_rp, m)
            fields = aggregate.numeric_fields(self.storage, source)
            counters, gauges = aggregate.split_fields(m, fields, self.rc.counters, self._known_counters)
            for lo in range(first_end, last_end + 1, CHUNK_SLOTS * SLOT_NS):
                hi = min(last_end, lo + (CHUNK_SLOTS - 1) * SLOT_NS)
                ends = list(range(lo, hi + 1, SLOT_NS))
                g = aggregate.gauge_rows(self.storage, source, gauges, lo - SLOT_NS, hi)
                c = {f: aggregate.counter_values(self.storage, source, f, ends, self.rc.max_interp_s)
                     for f in counters}
                points = aggregate.slot_points(m, g, c)
                self._note_incomplete(ends, c)
                for k in range(0, len(points), 5000):
                    self.storage.write(points[k:k + 5000])
                written += len(points)
        self.ctx.health.incr("slot_aggregates_written", written)
        return written

    def _note_incomplete(self, ends: list[int], counters: dict[str, dict]) -> None:
        """Recent slot ends where a counter series known in this range has no value yet (its first reading after
        the end had not arrived): retried for `lookback_slots`."""
        recent = floor_slot(self.ctx.clock()) - self.rc.lookback_slots * SLOT_NS
        for values in counters.values():
            series = {k for (k, _e) in values}
            missing = {e for e in ends if e > recent and any((k, e) not in values for k in series)}
            if missing:
                with self._lock:
                    self._incomplete |= missing

    def _resume_point(self, end: int) -> int:
        """The newest slot end aggregated (from the database), else the slot before the oldest raw reading."""
        rows = self.storage.query(f"SELECT * FROM {self.storage.source(DEVICE_SLOTS)} ORDER BY time DESC LIMIT 1")
        if rows:
            return int(rows[0]["time"])
        oldest = [t for m in policies.device_measurements(self.storage, self.database, self._raw_rp, self.rc.exclude)
                  if (t := policies.first_time(self.storage, policies.qualified(self.database, self._raw_rp, m)))
                  is not None]
        if not oldest:
            return end
        log.info("retention: aggregating the history from %s (the oldest raw reading)", iso(min(oldest)))
        return min(oldest) // SLOT_NS * SLOT_NS

    # -- policies and migration ----------------------------------------------------------------------------
    def _policies(self) -> None:
        try:
            ensure_database = getattr(self.storage, "ensure_database", None)
            if ensure_database is not None:
                ensure_database()  # a new database gets its policies before anything is written to them
            self._raw_rp = policies.raw_policy_name(self.storage, self.database, self.config.storage.retention_policy)
            caught_up = self.until is not None and self.until >= floor_slot(self.ctx.clock()) - SLOT_NS
            self._policy_state = policies.ensure(self.storage, self.database, self.rc, self._raw_rp,
                                                 may_shorten=caught_up and self._migrated)
            if not self._migrated and self._policy_state.get("keep_exists"):
                self._copy_kept()
        except StorageError as exc:
            self._policy_state = {"pending": f"database: {exc}"}
            raise

    def _copy_kept(self) -> None:
        """energy_flow, forecast and forecast_skill written to the raw policy by an older agent are copied into
        the keep policy (once per start; identical points overwrite each other)."""
        keep = self.rc.keep_policy
        if not self._raw_rp:
            return
        for m in COPIED:
            old = policies.first_time(self.storage, policies.qualified(self.database, self._raw_rp, m))
            if old is None:
                continue
            src, dst = (policies.qualified(self.database, rp, m) for rp in (self._raw_rp, keep))
            log.info("retention: copying %s from %s into %s", m, self._raw_rp, keep)
            t, now = old, time.time_ns() + DAY_NS
            while t <= now:  # a month per statement: bounded memory in influxd
                t2 = t + 30 * DAY_NS
                self.storage.query(f"SELECT * INTO {dst} FROM {src} WHERE time >= {t} AND time < {t2} GROUP BY *")
                t = t2
        self._migrated = True

    # -- status ---------------------------------------------------------------------------------------------
    def status(self) -> dict:
        return {"raw_days": self.rc.raw_days, "keep_policy": self.rc.keep_policy,
                "keep_days": self.rc.keep_days or None, "aggregated_until": iso(self.until) if self.until else None,
                "policies": dict(self._policy_state), "raw_budget": dict(self._budget_state)}

    def start(self) -> None:
        """The policies before the other components write what lasts (the flow's first run comes before this
        component's job); the database may be away at boot: then the job retries."""
        try:
            self._policies()
        except StorageError as exc:
            log.warning("retention: cannot check the retention policies yet: %s", exc)

    def stop(self) -> None:
        self.storage.close()



def _parse(cfg: AgentConfig) -> RetentionConfig | None:
    return parse_config(cfg)


SPEC = ComponentSpec("retention", _parse, Retention)
