"""Energy-flow component: per 15-minute slot, from the devices' readings in InfluxDB to `energy_flow` points.

Runs at every slot boundary (+ delay) over the last `lookback_slots`, and again, a few seconds later, for any
older slots that late data reached (the ingest reports what it stored). Rewrites are idempotent: a slot's point
has the slot's end time, so recomputing overwrites it. See edge_agent/flowmath.py for the maths and
docs/energy-flow.md for the configuration.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from edge_agent.config import AgentConfig, ConfigError, build_dataclass
from edge_agent.flowmath import RoleEnergy, compute
from edge_agent.schedule import floor_slot, next_run
from shared.points import Point, line_head
from shared.schema import ENERGY_FLOW, SLOT_NS
from shared.series import Readings, SlotSeries, counter_to_slots, iso, power_to_slots

log = logging.getLogger(__name__)


@dataclass
class FlowDevice:
    role: str  # grid | pv | battery | consumer
    measurement: str
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    input: str = "counter"  # counter (kWh) or power (W)
    import_field: str | None = None  # grid: import counter; pv: production; battery: charge counter
    export_field: str | None = None  # grid: export counter; battery: discharge counter
    power_field: str | None = None  # input=power: grid + import/− export; battery + charge/− discharge; pv +


@dataclass
class FlowConfig:
    enabled: bool = True
    delay_s: float = 30.0
    lookback_slots: int = 8
    late_debounce_s: float = 2.0
    devices: list = dataclasses.field(default_factory=list)


def parse_config(cfg: AgentConfig) -> FlowConfig:
    where = f"{cfg.path}: [flow]"
    fc = build_dataclass(FlowConfig, cfg.section("flow"), where)
    devices = []
    for i, d in enumerate(fc.devices):
        dev = build_dataclass(FlowDevice, d, f"{where}.devices[{i}]")
        if dev.role not in ("grid", "pv", "battery", "consumer"):
            raise ConfigError(f"{where}.devices[{i}].role must be grid, pv, battery or consumer")
        if dev.input == "counter" and not (dev.import_field or dev.export_field):
            raise ConfigError(f"{where}.devices[{i}]: a counter device needs import_field and/or export_field")
        if dev.input == "power" and not dev.power_field:
            raise ConfigError(f"{where}.devices[{i}]: a power device needs power_field")
        if dev.input not in ("counter", "power"):
            raise ConfigError(f"{where}.devices[{i}].input must be counter or power")
        devices.append(dev)
    if not any(d.role == "grid" for d in devices):
        raise ConfigError(f"{where}: a device with role = \"grid\" (the grid meter) is required")
    fc.devices = devices
    return fc


def validate_config(cfg: AgentConfig) -> None:
    if "flow" in cfg.raw:
        parse_config(cfg)


class Flow:
    def __init__(self, config: AgentConfig, fc: FlowConfig, ctx):
        self.config, self.fc, self.ctx = config, fc, ctx
        self.storage = ctx.storage
        self._measurements = {d.measurement for d in fc.devices}
        self._dirty_from: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        ctx.on_stored(self._on_stored)

    # -- late data ----------------------------------------------------------------------------------------
    def _on_stored(self, lines: list[bytes]) -> None:
        """Remember the oldest slot that new device data touched; recompute from there soon."""
        oldest = None
        for line in lines:
            try:
                measurement, t = line_head(line)
            except (ValueError, IndexError):
                continue
            if measurement in self._measurements and (oldest is None or t < oldest):
                oldest = t
        if oldest is None:
            return
        slot_end = -(-oldest // SLOT_NS) * SLOT_NS
        with self._lock:
            if self._dirty_from is None or slot_end < self._dirty_from:
                self._dirty_from = slot_end
        self._wake.set()

    # -- reading ------------------------------------------------------------------------------------------
    def _slots(self, dev: FlowDevice, field: str, start_ns: int, end_ns: int) -> np.ndarray:
        margin = 2 * SLOT_NS if dev.input == "counter" else SLOT_NS
        rows = self.storage.query_series(dev.measurement, field,
                                         datetime.fromtimestamp((start_ns - SLOT_NS - margin) / 1e9, UTC),
                                         datetime.fromtimestamp(end_ns / 1e9, UTC) + timedelta(microseconds=1),
                                         dev.tags or None)
        readings = Readings.from_rows(rows)
        if dev.input == "counter":
            s = counter_to_slots(readings, start_ns=start_ns, end_ns=end_ns, mask_quantised=False)
        else:
            s = power_to_slots(readings, start_ns=start_ns, end_ns=end_ns)
        n = (end_ns - start_ns) // SLOT_NS + 1
        return s.values if len(s.values) == n else np.full(n, np.nan)

    def _power_split(self, dev: FlowDevice, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """A signed power series → (positive part, negative part) in kWh per slot."""
        rows = self.storage.query_series(dev.measurement, dev.power_field,
                                         datetime.fromtimestamp((start_ns - 2 * SLOT_NS) / 1e9, UTC),
                                         datetime.fromtimestamp(end_ns / 1e9, UTC) + timedelta(microseconds=1),
                                         dev.tags or None)
        pos = Readings.from_rows([(t, max(v, 0.0)) for t, v in rows])
        neg = Readings.from_rows([(t, max(-v, 0.0)) for t, v in rows])
        n = (end_ns - start_ns) // SLOT_NS + 1
        a = power_to_slots(pos, start_ns=start_ns, end_ns=end_ns).values if rows else np.full(n, np.nan)
        b = power_to_slots(neg, start_ns=start_ns, end_ns=end_ns).values if rows else np.full(n, np.nan)
        return (a if len(a) == n else np.full(n, np.nan)), (b if len(b) == n else np.full(n, np.nan))

    def _role(self, role: str, start_ns: int, end_ns: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Summed (import-like, export-like) kWh per slot over the devices with this role; None: none."""
        devices = [d for d in self.fc.devices if d.role == role]
        if not devices:
            return None, None
        n = (end_ns - start_ns) // SLOT_NS + 1
        a_sum, b_sum, has_b = np.zeros(n), np.zeros(n), False
        for d in devices:
            if d.input == "power":
                a, b = self._power_split(d, start_ns, end_ns)
                has_b = has_b or role != "pv"
            else:
                a = self._slots(d, d.import_field, start_ns, end_ns) if d.import_field else np.zeros(n)
                b = np.zeros(n)
                if d.export_field:
                    b, has_b = self._slots(d, d.export_field, start_ns, end_ns), True
            a_sum += a
            b_sum += b
        return a_sum, (b_sum if has_b else None)

    # -- computing ----------------------------------------------------------------------------------------
    def compute_range(self, start_ns: int, end_ns: int) -> int:
        """Recompute and write the slots ending in [start_ns, end_ns]; returns how many were written."""
        start_ns = start_ns // SLOT_NS * SLOT_NS
        end_ns = end_ns // SLOT_NS * SLOT_NS
        if end_ns < start_ns:
            return 0
        grid_imp, grid_exp = self._role("grid", start_ns, end_ns)
        pv, _ = self._role("pv", start_ns, end_ns)
        chg, dis = self._role("battery", start_ns, end_ns)
        has_battery = any(d.role == "battery" for d in self.fc.devices)
        fields, flags = compute(RoleEnergy(grid_imp, grid_exp, pv, chg if has_battery else None,
                                           (dis if dis is not None else np.zeros(len(grid_imp)))
                                           if has_battery else None))
        ends = SlotSeries(start_ns, grid_imp).end_ns
        points = []
        for i, t in enumerate(ends.tolist()):
            values = {k: float(v[i]) for k, v in fields.items() if np.isfinite(v[i])}
            if not values:
                continue
            # always written: a rewrite of the slot must clear flags of an earlier, incomplete computation
            # (InfluxDB merges the fields of points with the same series and time)
            values["flags"] = flags[i]
            points.append(Point(ENERGY_FLOW, {}, values, int(t)))
        for k in range(0, len(points), 5000):
            self.storage.write(points[k:k + 5000])
        self.ctx.health.incr("flow_slots_written", len(points))
        self.ctx.health.incr("flow_slots_flagged", sum(1 for f in flags if f))
        return len(points)

    def run_once(self, now: datetime | None = None) -> int:
        now = now or self.ctx.clock()
        end = floor_slot(now)
        with self._lock:
            dirty, self._dirty_from = self._dirty_from, None
        start = end - (self.fc.lookback_slots - 1) * SLOT_NS
        if dirty is not None:
            start = min(start, dirty)
            # late data into the future of the clock (replays) is computed up to its own time
        written = 0
        # chunks of ~40 days keep queries and memory small when a whole year arrives late
        chunk = 40 * 96 * SLOT_NS
        s = start
        while s <= end:
            written += self.compute_range(s, min(end, s + chunk - SLOT_NS))
            s += chunk
        log.debug("flow: %d slots written (%s … %s)", written, iso(start), iso(end))
        return written

    def _loop(self) -> None:
        next_due = next_run(self.ctx.clock(), self.fc.delay_s)
        while not self._stop.is_set():
            timeout = max(0.05, min(1.0, (next_due - self.ctx.clock()).total_seconds()))
            woke = self._wake.wait(timeout)
            if self._stop.is_set():
                return
            if woke:
                self._stop.wait(self.fc.late_debounce_s)
                self._wake.clear()
            if woke or self.ctx.clock() >= next_due:
                try:
                    self.run_once()
                except Exception as exc:
                    self.ctx.health.incr("flow_errors")
                    log.error("flow computation failed: %s", exc)
                if self.ctx.clock() >= next_due:
                    next_due = next_run(self.ctx.clock(), self.fc.delay_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="flow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(10)
        self.storage.close()


def build(config: AgentConfig, ctx) -> Flow | None:
    if "flow" not in config.raw:
        return None
    fc = parse_config(config)
    return Flow(config, fc, ctx) if fc.enabled else None
