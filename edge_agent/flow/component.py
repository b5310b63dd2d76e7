"""Energy-flow component: per 15-minute slot, from the devices' readings in InfluxDB to `energy_flow` points.

When: at every slot boundary + `delay_s`, the slots that ended since the last run (and the recent ones still
missing a reading) are computed; a slot needs its devices' first reading after its end, which is why the delay
exists. Data that arrives out of order (a device's buffer, a replayed year, a redelivery after a reconnect)
marks the slots it can change — up to `max_interp_s` before the reading — and they are recomputed after
`late_debounce_s`. Data arriving in order touches nothing computed and wakes nothing (issue 18: every stored
batch used to recompute the whole look-back window from raw readings).

How: counters are read at slot boundaries only (edge_agent/storage/boundaries.py: the two readings around each
boundary, cached once settled); power inputs are read raw for the slots being computed. This module reads and
writes; the computing has no I/O: edge_agent/flow/maths.py allocates the flows, edge_agent/flow/slots.py judges
bridged boundaries, prices the slots and makes the points. A slot whose counter value at a boundary bridged a
missing reading (interpolated across more than `gap_s`) is flagged `interpolated`; unless both slots sharing the
boundary are known and possible (no negative balance), the role is left unknown in both rather than split by
invention, whichever is computed first. Rewrites are idempotent: a slot's point has the slot's end time. The
running totals for Home Assistant follow every rewrite (edge_agent/flow/totals.py). The battery's origin state is
carried from slot to slot through the database (fields battery_content_kwh / battery_pv_share), so it survives
restarts and recomputes.

See docs/energy-flow.md for the configuration.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from edge_agent.component import AgentContext, ComponentSpec
from edge_agent.config import AgentConfig, ConfigError, at_least_one, build_dataclass, setting
from edge_agent.flow.maths import BatteryState, RoleEnergy, compute
from edge_agent.flow.power import PowerNow
from edge_agent.flow.slots import RoleSlots, add_cost, blank_invented, slot_points, wide_boundaries
from edge_agent.flow.totals import RunningTotals
from edge_agent.publish import hass
from edge_agent.runtime.timer import floor_slot
from edge_agent.storage.boundaries import CounterBoundaries
from shared.points import Point, escape_measurement
from shared.schema import ENERGY_FLOW, FLAGS_FIELD, SLOT_NS
from shared.series import Readings, iso, merge_slot_ranges, power_to_slots, slots_from_counter

log = logging.getLogger(__name__)

ROLES = ("grid", "pv", "battery", "consumer")
SECONDS = "0 or more (seconds)"


def _not_negative(v: float) -> bool:
    return v >= 0


@dataclass
class FlowDevice:
    role: str = setting(check=lambda v: v in ROLES, wants="grid, pv, battery or consumer")
    measurement: str
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    input: str = setting("counter", check=lambda v: v in ("counter", "power"),
                         wants="counter (kWh) or power (W)")
    import_field: str | None = None  # grid: import counter; pv: production; battery: charge counter
    export_field: str | None = None  # grid: export counter; battery: discharge counter
    # input=power: the power it is computed from; counter: the power it reports, for Home Assistant's power sensors
    # (W; grid + import/− export, battery + charge/− discharge, pv +)
    power_field: str | None = None
    capacity_kwh: float | None = None  # battery: usable capacity (bounds the tracked content; optional)


@dataclass
class FlowConfig:
    enabled: bool = True
    # after each boundary: time for the devices' first reading after it to arrive
    delay_s: float = setting(30.0, check=_not_negative, wants=SECONDS)
    # computed at start, and how far back slots still missing a reading are retried
    lookback_slots: int = setting(8, check=at_least_one, wants="at least 1")
    # out-of-order data is collected this long before the slots it changes are redone
    late_debounce_s: float = setting(2.0, check=_not_negative, wants=SECONDS)
    # a counter is interpolated between readings at most this far apart …
    max_interp_s: float = setting(1800.0, check=_not_negative, wants=SECONDS)
    # … and a slot whose value bridged more than this is flagged `interpolated`
    gap_s: float = setting(300.0, check=_not_negative, wants=SECONDS)
    publish: bool = True  # retained MQTT: <topic_prefix>/flow/slot and /flow/totals (Home Assistant sensors)
    # the devices' power (power_field) on <topic_prefix>/flow/power at most this often
    power_interval_s: float = setting(10.0, check=_not_negative, wants=SECONDS)
    devices: list = dataclasses.field(default_factory=list)


def parse_config(cfg: AgentConfig) -> FlowConfig | None:
    """The [flow] section, validated; None when it is absent or disabled."""
    if "flow" not in cfg.raw:
        return None
    where = f"{cfg.path}: [flow]"
    fc = build_dataclass(FlowConfig, cfg.section("flow"), where)
    devices = []
    for i, d in enumerate(fc.devices):
        dev = build_dataclass(FlowDevice, d, f"{where}.devices[{i}]")
        if dev.input == "counter" and not (dev.import_field or dev.export_field):
            raise ConfigError(f"{where}.devices[{i}]: a counter device needs import_field and/or export_field")
        if dev.input == "power" and not dev.power_field:
            raise ConfigError(f"{where}.devices[{i}]: a power device needs power_field")
        devices.append(dev)
    if not any(d.role == "grid" for d in devices):
        raise ConfigError(f"{where}: a device with role = \"grid\" (the grid meter) is required")
    fc.devices = devices
    return fc if fc.enabled else None


_SERIES = re.compile(rb"(?:[^ \\\n]|\\.)*")


class Flow:
    def __init__(self, fc: FlowConfig, ctx: AgentContext):
        self.config, self.fc, self.ctx = ctx.config, fc, ctx
        self.storage = ctx.open_storage()
        self._boundaries: dict[tuple[int, str], CounterBoundaries] = {}
        for i, d in enumerate(fc.devices):
            for f in (d.import_field, d.export_field) if d.input == "counter" else ():
                if f:
                    self._boundaries[(i, f)] = CounterBoundaries(self.storage, d.measurement, f, d.tags,
                                                                 fc.max_interp_s)
        self._prefixes = sorted({escape_measurement(d.measurement).encode() for d in fc.devices})
        self._capacity = sum(d.capacity_kwh or 0 for d in fc.devices if d.role == "battery") or None
        self._lock = threading.Lock()
        self._computed_until: int | None = None  # newest slot end computed
        self._incomplete: set[int] = set()  # recent slot ends computed with a reading missing
        self._dirty: tuple[int, int] | None = None  # slot ends to recompute (late data)
        self._newest: dict[bytes, int] = {}  # newest reading time per series (measurement + tags)
        # of those, slots a bridged boundary left unknown or waiting for a price: redone with the next slot (or when
        # prices arrive), not at every reading
        self._held: set[int] = set()
        self.totals = RunningTotals(ctx.state_dir / "flow_totals.json")
        self.power = PowerNow(fc.devices, fc.power_interval_s)
        self.tariff = ctx.components.get("tariff")  # built before the flow (edge_agent/agent.py COMPONENTS)
        self._flushed = 0  # the newest boundary ingest was flushed for
        ctx.on_stored(self._on_stored)
        ctx.timer.add("flow", fc.delay_s, self._scheduled, at_start=True)

    # -- late data ----------------------------------------------------------------------------------------
    def _on_stored(self, lines: list[bytes]) -> None:
        """Find readings that arrived out of order and can change slots already computed (cheap: runs in the
        drainer for every stored batch)."""
        # before the first computation, everything up to now counts as computed (the first run covers only the
        # look-back window: older data must still mark its slots)
        computed = self._computed_until if self._computed_until is not None else floor_slot(self.ctx.clock())
        late_lo = late_hi = None
        touched_incomplete = False
        waiting = self._incomplete - self._held  # held slots wait for the next boundary, not for a reading
        first_incomplete = min(waiting) if waiting else None
        for line in lines:
            if not any(line.startswith(p) and line[len(p):len(p) + 1] in (b",", b" ") for p in self._prefixes):
                continue
            try:
                t = int(line.rstrip(b"\n").rsplit(b" ", 1)[1])
            except (ValueError, IndexError):
                continue
            key = _SERIES.match(line).group()
            newest = self._newest.get(key)
            in_order = newest is None or t > newest
            if in_order:
                self._newest[key] = t
            # A reading before the newest computed boundary changes computed slots; so does one shortly after it
            # that arrived out of order (it may be closer to the boundary than what was used). Fresh readings
            # in order touch nothing computed — except slots still missing their reading after the end.
            if t <= computed or (not in_order and t <= computed + self.fc.max_interp_s * 1e9):
                late_lo = t if late_lo is None else min(late_lo, t)
                late_hi = t if late_hi is None else max(late_hi, t)
            elif first_incomplete is not None and t > first_incomplete:
                touched_incomplete = True
        if late_lo is not None:
            self._mark_late(late_lo, late_hi)
        elif touched_incomplete:
            self.ctx.timer.trigger("flow", self.fc.late_debounce_s)
        if self.fc.publish and self.power.update(lines):
            self._publish_power()

    def _mark_late(self, t_lo: int, t_hi: int) -> None:
        window = int(self.fc.max_interp_s * 1e9)
        for cache in self._boundaries.values():
            cache.invalidate_from(t_lo)
        lo = -(-(t_lo - window) // SLOT_NS) * SLOT_NS  # first boundary the reading can change …
        hi = (t_hi + window) // SLOT_NS * SLOT_NS + SLOT_NS  # … and the slot starting at the last one
        with self._lock:
            if self._dirty:
                lo, hi = min(lo, self._dirty[0]), max(hi, self._dirty[1])
            self._dirty = (lo, hi)
        self.ctx.timer.trigger("flow", self.fc.late_debounce_s)

    # -- reading ------------------------------------------------------------------------------------------
    def _counter(self, i: int, field: str, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """kWh per slot and the boundary spans for one counter field."""
        bounds = np.concatenate([[ends[0] - SLOT_NS], ends])
        c, spans = self._boundaries[(i, field)].values(bounds)
        return slots_from_counter(c, mask_quantised=False), spans

    def _power(self, d: FlowDevice, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A signed power series → (positive part, negative part) in kWh per slot."""
        start, end = int(ends[0]), int(ends[-1])
        rows = self.storage.query_series(d.measurement, d.power_field,
                                         datetime.fromtimestamp((start - SLOT_NS - 300e9) / 1e9, UTC),
                                         datetime.fromtimestamp(end / 1e9, UTC) + timedelta(microseconds=1),
                                         d.tags or None)
        n = len(ends)
        if not rows:
            return np.full(n, np.nan), np.full(n, np.nan)
        pos = power_to_slots(Readings.from_rows([(t, max(v, 0.0)) for t, v in rows]), start, end).values
        neg = power_to_slots(Readings.from_rows([(t, max(-v, 0.0)) for t, v in rows]), start, end).values
        fit = lambda a: a if len(a) == n else np.full(n, np.nan)  # noqa: E731
        return fit(pos), fit(neg)

    def _role(self, role: str, ends: np.ndarray) -> RoleSlots | None:
        """Summed (import-like, export-like) kWh per slot over the devices with this role; None: none."""
        devices = [(i, d) for i, d in enumerate(self.fc.devices) if d.role == role]
        if not devices:
            return None
        n = len(ends)
        a_sum, b_sum, has_b = np.zeros(n), np.zeros(n), False
        spans = np.zeros(n + 1)
        for i, d in devices:
            if d.input == "power":
                a, b = self._power(d, ends)
                has_b = has_b or role != "pv"
            else:
                a, b = np.zeros(n), np.zeros(n)
                if d.import_field:
                    a, sp = self._counter(i, d.import_field, ends)
                    spans = np.fmax(spans, sp)
                if d.export_field:
                    b, sp = self._counter(i, d.export_field, ends)
                    spans = np.fmax(spans, sp)
                    has_b = True
            a_sum += a
            b_sum += b
        return RoleSlots(a_sum, b_sum if has_b else None, spans)

    def _battery_state(self, before_ns: int) -> BatteryState:
        """The battery's origin state at the last computed slot before `before_ns` (two days back at most)."""
        q = (f'SELECT last("battery_content_kwh") AS c, last("battery_pv_share") AS s FROM {self.storage.source(ENERGY_FLOW)} '
             f"WHERE time < {before_ns} AND time >= {before_ns - 2 * 96 * SLOT_NS}")
        try:
            rows = self.storage.query(q)
        except Exception as exc:  # a fresh database, or 2.x (Flux): start from an empty battery
            log.debug("flow: no battery state before %s: %s", iso(before_ns), exc)
            return BatteryState()
        if rows and isinstance(rows[0].get("c"), int | float) and isinstance(rows[0].get("s"), int | float):
            return BatteryState(float(rows[0]["c"]), float(rows[0]["s"]))
        return BatteryState()

    # -- computing ----------------------------------------------------------------------------------------
    def compute_range(self, start_ns: int, end_ns: int) -> int:
        """Recompute and write the slots ending in [start_ns, end_ns]; returns how many were written.

        A counter value interpolated across a missing reading (a boundary bridged by more than gap_s) is judged
        with both slots that share the boundary, whatever order they are computed in (issue 25: the slot before
        the missing reading, computed first as real time does, kept an invented split). So the slot before the
        range and the one after it (when it has ended) are computed too, and written when such a boundary joins
        them to the range; until the slot after such a boundary can judge it, the role stays unknown in the slot
        before (`missing_<role>`), which is redone with the next slot. With a [tariff], each slot's cost is
        computed with it (the price the slot was stored with is kept when a dynamic list no longer has it)."""
        start_ns = start_ns // SLOT_NS * SLOT_NS
        end_ns = end_ns // SLOT_NS * SLOT_NS
        if end_ns < start_ns:
            return 0
        last_ended = floor_slot(self.ctx.clock())
        lo = start_ns - SLOT_NS
        hi = end_ns + SLOT_NS if end_ns + SLOT_NS <= last_ended else end_ns
        ends = lo + SLOT_NS * np.arange((hi - lo) // SLOT_NS + 1, dtype=np.int64)
        n = len(ends)
        roles = {r: self._role(r, ends) for r in ("grid", "pv", "battery")}
        blanked = blank_invented(roles, self.fc.gap_s, newest=bool(ends[-1] >= last_ended))
        wide = wide_boundaries(roles, self.fc.gap_s)
        first = 0 if wide[1] else 1  # the slot before: only when a bridged boundary joins it to the range
        last = n - 1 if hi == end_ns or wide[n - 1] else n - 2
        grid, pv, bat = roles["grid"], roles["pv"], roles["battery"]
        has_battery = bat is not None
        energy = RoleEnergy(grid.a, grid.b, pv.a if pv else None, bat.a if bat else None,
                            (bat.b if bat.b is not None else np.zeros(n)) if bat else None)
        state = self._battery_state(int(ends[0])) if has_battery else None
        fields, flags, _state = compute(energy, state, self._capacity)
        interpolated = wide[:-1] | wide[1:]
        write_lo, write_hi = int(ends[first]), int(ends[last])
        old = self._read_back(write_lo, write_hi)
        if self.tariff is not None:
            blanked |= self._add_cost(ends, fields, flags, old)
        points, incomplete, counted = slot_points(ends, first, last, fields, flags, interpolated)
        self._drop_stale_fields(points, old)
        for k in range(0, len(points), 5000):
            self.storage.write(points[k:k + 5000])
        self.ctx.health.incr("flow_slots_written", len(points))
        self.ctx.health.incr("flow_slots_flagged", sum(1 for p in points if p.fields[FLAGS_FIELD]))
        with self._lock:
            self._incomplete = {t for t in self._incomplete if not write_lo <= t <= write_hi} | incomplete
            self._held = {t for t in self._held if not write_lo <= t <= write_hi} | {
                int(ends[i]) for i in blanked if first <= i <= last}
        self._count_totals(counted, old, last_ended)
        if points and self.fc.publish:
            self._publish(points[-1])
        return len(points)

    def _add_cost(self, ends: np.ndarray, fields: dict[str, np.ndarray], flags: list[str],
                  old: dict[int, dict] | None) -> set[int]:
        """The slots' cost with the tariff's prices (edge_agent/flow/slots.py add_cost); returns the slots waiting
        for a price."""
        stored = {t: r["import_price"] for t, r in (old or {}).items()
                  if isinstance(r.get("import_price"), int | float)}
        return add_cost(fields, flags, self.tariff.import_prices(ends, stored), self.tariff.feed_in)

    def _read_back(self, start_ns: int, end_ns: int) -> dict[int, dict] | None:
        """What energy_flow holds for the slots ending in [start_ns, end_ns] (None: it cannot be read here)."""
        try:
            rows = self.storage.query(f"SELECT * FROM {self.storage.source(ENERGY_FLOW)} "
                                       f"WHERE time >= {start_ns} AND time <= {end_ns}")
        except Exception as exc:  # e.g. InfluxDB 2.x (Flux)
            log.debug("flow: cannot read back %s … %s: %s", iso(start_ns), iso(end_ns), exc)
            return None
        return {int(r["time"]): {k: v for k, v in r.items() if v is not None and k not in ("time", "_measurement")}
                for r in rows}

    def _drop_stale_fields(self, points: list[Point], old: dict[int, dict] | None) -> None:
        """InfluxDB merges the fields of a rewritten point with the old ones, so a value that became unknown (a
        role found missing, a split found invented) would stay. Slots that lose a field are deleted first.
        (`old` None: the old values cannot be read, e.g. InfluxDB 2.x, and may stay.)"""
        if not points or old is None:
            return
        stale = [p.time_ns for p in points if set(old.get(p.time_ns, {})) - set(p.fields)]
        written = {p.time_ns for p in points}
        stale += [t for t in old if t not in written]  # a slot with no data left at all
        if stale:
            self.storage.delete_points(ENERGY_FLOW, stale)
            self.ctx.health.incr("flow_slots_cleared", len(stale))

    def _scheduled(self, boundary_ns: int) -> None:
        t0 = time.process_time()
        if boundary_ns > self._flushed:  # the first run after a boundary: the readings just after it, which ingest
            self._flushed = boundary_ns  # may hold in its current group, go to the database first (late-data
            self.ctx.flush_ingest()  # runs need no flush: what triggered them is stored)
        try:
            self.run_once(boundary_ns)
        except Exception:
            self.ctx.health.incr("flow_errors")
            raise
        finally:
            self.ctx.health.set("flow_cpu_ms", round((time.process_time() - t0) * 1000, 1))

    def run_once(self, end_ns: int | None = None) -> int:
        """Compute what is due up to the slot ending at `end_ns` (default: the last boundary): slots ended since
        the last run, recent slots still missing a reading, and the slots late data touched."""
        end = end_ns if end_ns is not None else floor_slot(self.ctx.clock())
        with self._lock:
            dirty, self._dirty = self._dirty, None
            floor = end - (self.fc.lookback_slots - 1) * SLOT_NS
            self._incomplete = {t for t in self._incomplete if t >= floor}
            starts = [min(self._incomplete)] if self._incomplete else []
        starts.append(floor if self._computed_until is None else self._computed_until + SLOT_NS)
        written = 0
        ranges = []
        start = min(starts)
        if start <= end:
            ranges.append((start, end))
        if dirty is not None:
            lo, hi = dirty
            if any(d.role == "battery" for d in self.fc.devices):
                hi = max(hi, end)  # the battery's origin state carries forward: recompute up to now
            ranges.append((lo, min(hi, max(end, self._computed_until or end))))
        chunk = 40 * 96 * SLOT_NS  # ~40 days: bounded queries and memory when a whole year arrives late
        for lo, hi in merge_slot_ranges(ranges):
            s = lo
            while s <= hi:
                written += self.compute_range(s, min(hi, s + chunk - SLOT_NS))
                s += chunk
        if start <= end:
            self._computed_until = max(self._computed_until or end, end)
        for cache in self._boundaries.values():
            cache.forget_before(end - (self.fc.lookback_slots + 4) * SLOT_NS)
        log.debug("flow: %d slots written up to %s", written, iso(end))
        return written

    # -- totals for Home Assistant --------------------------------------------------------------------------
    def _count_totals(self, counted: dict[int, dict], old: dict[int, dict] | None, last_ended: int) -> None:
        """The running totals follow every (re)computed slot (edge_agent/flow/totals.py)."""
        if not counted:
            return
        if self.totals.count(counted, old):  # a recomputation that changed nothing writes nothing
            self.totals.forget_before(last_ended - (self.fc.lookback_slots + 2) * SLOT_NS)
            self.totals.save()

    def _publish(self, newest: Point) -> None:
        prefix = self.ctx.topic_prefix
        try:
            self.ctx.publish(hass.flow_slot_topic(prefix), json.dumps({**newest.fields,
                                                                       "slot_end": iso(newest.time_ns)}),
                             qos=1, retain=True)
            if self.totals.until is not None:
                doc = self.totals.payload() | {"last_slot": iso(self.totals.until)}
                self.ctx.publish(hass.flow_totals_topic(prefix), json.dumps(doc), qos=1, retain=True)
        except Exception as exc:
            self.ctx.health.incr("publish_errors")
            log.warning("flow: publishing failed: %s", exc)
        if self.tariff is not None:
            self.tariff.publish_actual()

    def _publish_power(self) -> None:
        try:
            self.ctx.publish(hass.flow_power_topic(self.ctx.topic_prefix), json.dumps(self.power.payload()), qos=0,
                             retain=True)
        except Exception as exc:
            self.ctx.health.incr("publish_errors")
            log.warning("flow: publishing the power failed: %s", exc)

    def discovery_components(self) -> dict[str, dict]:
        """Home Assistant: the totals, the slot's ratios and the power sensors (edge_agent/publish/hass.py)."""
        if not self.fc.publish:
            return {}
        pub = self.config.publish
        return hass.flow_components(pub.node_id, pub.topic_prefix, {d.role for d in self.fc.devices},
                                    self.power.sensor_roles())

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        pass  # the timer runs it; its Home Assistant entities are announced by the agent (discovery_components)

    def stop(self) -> None:
        self.storage.close()



SPEC = ComponentSpec("flow", parse_config, Flow)
