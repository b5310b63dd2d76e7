"""What needs a person's attention, judged from the agent's own state every health interval.

One list of `{"code", "message"}` for every place that shows it: the status API (`problems`), the retained MQTT
topic `<prefix>/problem` behind Home Assistant's `problem` binary sensor (edge_agent/publish/hass.py
`problem_components`, in the device config), and the server's overview, which reads the status. Codes:

| code | when |
|---|---|
| `ingest_stalled` | a worker thread of ingest made no progress, or no message arrived for `[alerts] quiet_s` |
| `spool_filling` | the spool holds more than `[spool] warn_ratio` of `max_bytes` (the database does not take them) |
| `disk_filling` | a watched filesystem (the state directory, `[alerts] disk_paths`) has less than `disk_free_ratio` free |
| `database_down` | InfluxDB does not answer its ping |
| `backup_stale` | the last good backup is older than `backup_max_age_h` (48 h), or there is none although `[backup]` is set |
| `model_shadow` | the guard keeps a model out of service: a naive baseline serves instead |
| `write_budget_exceeded` | the agent's own `bytes_written_per_day` (health, measured over at least an hour) exceeds `write_budget_mb_per_day` |
| `raw_over_budget` | `[retention] raw_max_mb` cannot be kept: the agent's database user may not measure or drop shards |
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.config import AgentConfig, build_dataclass, setting

WRITE_BUDGET_MIN_SPAN_S = 3600.0  # the write rate is judged once it stands for an hour or more


@dataclass
class AlertsConfig:
    enabled: bool = True
    # no message from any device for this long: ingest_stalled (0: off)
    quiet_s: float = setting(900.0, check=lambda v: v >= 0, wants="0 (off) or more (seconds)")
    disk_free_ratio: float = setting(0.10, check=lambda v: 0 <= v < 1, wants="at least 0 and below 1")
    disk_paths: list[str] = field(default_factory=list)  # besides the state directory, e.g. /var/lib/influxdb
    backup_max_age_h: float = setting(48.0, check=lambda v: v > 0, wants="more than 0 (hours)")
    # the SD card's budget (docs/pi.md); compared with bytes_written_per_day
    write_budget_mb_per_day: float = setting(50.0, check=lambda v: v > 0, wants="more than 0 (MB)")
    # the problem topic is published on every change and at least this often
    publish_every_s: float = setting(900.0, check=lambda v: v >= 10, wants="at least 10 (seconds)")


def parse_config(cfg: AgentConfig) -> AlertsConfig:
    return build_dataclass(AlertsConfig, cfg.section("alerts"), f"{cfg.path}: [alerts]")


@dataclass
class Inputs:
    """What the checks read; each a callable so that a failing one costs only its own check."""

    stalled: Callable[[], str | None]
    received: Callable[[], float]
    spool_bytes: Callable[[], float]
    spool_max: float
    spool_warn_ratio: float
    db_up: Callable[[], bool]
    backup: Callable[[], dict]
    backup_expected: bool
    guard: Callable[[], dict | None]
    health_value: Callable[[str], float | None]
    paths: list[Path]
    raw_budget: Callable[[], str | None] = lambda: None  # the retention component's budget_problem


class Problems:
    def __init__(self, ac: AlertsConfig, inputs: Inputs, clock: Callable[[], float] = time.time):
        self.ac, self.inp, self.clock = ac, inputs, clock
        self._received = (-1.0, clock())  # (count, since when it has not changed)
        self.current: list[dict] = []

    def check(self) -> list[dict]:
        out: list[dict] = []
        if not self.ac.enabled:
            self.current = out
            return out
        for check in (self._ingest, self._spool, self._disk, self._database, self._backup, self._shadow,
                      self._writes, self._raw_budget):
            try:
                out += check()
            except Exception as exc:  # a check that cannot run says so instead of hiding the others
                out.append({"code": "check_failed", "message": f"{check.__name__.strip('_')}: {exc}"})
        self.current = out
        return out

    def _ingest(self) -> list[dict]:
        why = self.inp.stalled()
        if why:
            return [{"code": "ingest_stalled", "message": why}]
        n, now = self.inp.received(), self.clock()
        if n != self._received[0]:
            self._received = (n, now)
        quiet = now - self._received[1]
        if self.ac.quiet_s and quiet > self.ac.quiet_s:
            return [{"code": "ingest_stalled", "message": f"no message from any device for {quiet / 60:.0f} min"}]
        return []

    def _spool(self) -> list[dict]:
        held = self.inp.spool_bytes()
        if held > self.inp.spool_warn_ratio * self.inp.spool_max:
            return [{"code": "spool_filling", "message": f"the spool holds {held / 2**20:.0f} MiB of "
                                                         f"{self.inp.spool_max / 2**20:.0f} MiB: the database does not take them"}]
        return []

    def _disk(self) -> list[dict]:
        out = []
        for p in self.inp.paths:
            try:
                st = os.statvfs(p)
            except OSError:
                continue
            free = st.f_bavail / max(st.f_blocks, 1)
            if free < self.ac.disk_free_ratio:
                out.append({"code": "disk_filling", "message": f"{p}: {free:.0%} free "
                                                               f"({st.f_bavail * st.f_frsize / 2**30:.1f} GiB)"})
        return out

    def _database(self) -> list[dict]:
        return [] if self.inp.db_up() else [{"code": "database_down", "message": "InfluxDB does not answer"}]

    def _backup(self) -> list[dict]:
        b = self.inp.backup()
        age = b.get("age_s")
        if age is None:
            return [{"code": "backup_stale", "message": "no backup yet"}] if self.inp.backup_expected else []
        if age > self.ac.backup_max_age_h * 3600:
            return [{"code": "backup_stale", "message": f"the last good backup is {age / 86400:.1f} days old"}]
        return []

    def _shadow(self) -> list[dict]:
        guard = self.inp.guard() or {}
        names = sorted(n for n, m in (guard.get("models") or {}).items() if (m or {}).get("state") == "shadow")
        if names:
            return [{"code": "model_shadow", "message": f"{', '.join(names)} in the guard's shadow: a naive "
                                                        "baseline serves instead"}]
        return []

    def _writes(self) -> list[dict]:
        per_day = self.inp.health_value("bytes_written_per_day")
        span = self.inp.health_value("bytes_written_span_s") or 0
        budget = self.ac.write_budget_mb_per_day * 1e6
        # a start's writes or a catch-up after an outage, scaled to a day, are not the day's rate: judge an hour on
        if per_day is not None and per_day > budget and span >= WRITE_BUDGET_MIN_SPAN_S:
            return [{"code": "write_budget_exceeded", "message": f"{per_day / 1e6:.0f} MB written per day, budget "
                                                                 f"{self.ac.write_budget_mb_per_day:g} MB"}]
        return []

    def _raw_budget(self) -> list[dict]:
        why = self.inp.raw_budget()
        return [{"code": "raw_over_budget", "message": why}] if why else []


def payload(problems: list[dict], now_iso: str, last_backup: str | None = None) -> dict:
    """The retained `<prefix>/problem` message Home Assistant's binary sensor reads."""
    return {"problem": bool(problems), "reasons": [p["code"] for p in problems],
            "reason": "; ".join(p["message"] for p in problems) or None, "checked_at": now_iso,
            "last_backup": last_backup}
