"""The [retention] section: how long raw readings stay, where what lasts goes, which fields are counters.

Absent section: retention is off (everything stays in the database's default policy, as before 0.3); the shipped
configurations (Ansible, docker-compose, the examples) turn it on. docs/pi.md "Retention" explains the figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge_agent.config import KEEP_POLICY, AgentConfig, ConfigError, build_dataclass

# Fields aggregated as counters (value at the slot end) unless `counters` says otherwise: the usual names of energy
# counters (seed EnergyIn/EnergyOut, Tasmota Total, Shelly aenergy_total / total_act_energy, *_kwh, *_wh).
DEFAULT_COUNTERS = ("*nergy*", "Total", "*total*", "*_kwh", "*_wh", "*_Wh")


@dataclass
class RetentionConfig:
    enabled: bool = True
    raw_days: float = 90.0  # raw readings and health: the database's default policy ([storage] retention_policy)
    raw_max_mb: float = 1000.0  # and at most this much on disk: the oldest raw shard groups dropped (0: no bound)
    # energy_flow, forecast, forecast_skill, device_slots (checked, and routed to, by edge_agent/config.py)
    keep_policy: str = KEEP_POLICY
    keep_days: float = 0.0  # 0: forever
    raw_shard_hours: int = 168  # shard groups of the raw policy: a week (influxd 1.6 needs memory per shard)
    keep_shard_days: int = 182  # two shards a year: influxd holds an index per shard in memory
    manage_policies: bool = True  # create / alter the policies when the database user may (an admin)
    counters: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_COUNTERS))  # field globs
    exclude: list[str] = dataclasses.field(default_factory=list)  # measurements (globs) not aggregated
    delay_s: float = 45.0  # after each boundary: the devices' first reading after it must be in (counters)
    max_interp_s: float = 1800.0  # a counter's value at a slot end is interpolated across at most this
    lookback_slots: int = 4  # slots whose counter still lacked a reading after their end are retried this long
    catchup_days: float = 7.0  # history aggregated per run after an outage (the rest follows right after)

    @property
    def raw_duration(self) -> str:
        return f"{int(round(self.raw_days * 24))}h"

    @property
    def raw_shard(self) -> int:
        """Hours per raw shard group: `raw_shard_hours`, at most the policy's duration (InfluxDB's rule)."""
        return max(1, min(self.raw_shard_hours, int(round(self.raw_days * 24))))

    @property
    def keep_duration(self) -> str:
        return "INF" if self.keep_days <= 0 else f"{int(round(self.keep_days * 24))}h"


def parse_config(cfg: AgentConfig) -> RetentionConfig | None:
    """The [retention] section, validated; None when it is absent or disabled."""
    if "retention" not in cfg.raw:
        return None
    where = f"{cfg.path}: [retention]"
    rc = build_dataclass(RetentionConfig, cfg.section("retention"), where)
    checks = (("raw_days", 1 <= rc.raw_days <= 36500, "between 1 and 36500 (days)"),
              ("raw_max_mb", 0 <= rc.raw_max_mb <= 10**7, "0 (no size bound) or up to 10000000 (MB)"),
              ("keep_days", rc.keep_days == 0 or rc.keep_days >= rc.raw_days, "0 (forever) or at least raw_days"),
              ("raw_shard_hours", 1 <= rc.raw_shard_hours <= 24 * 7, "between 1 and 168"),
              ("keep_shard_days", 1 <= rc.keep_shard_days <= 366, "between 1 and 366"),
              ("delay_s", 0 <= rc.delay_s < 900, "between 0 and 900 (seconds)"),
              ("max_interp_s", 0 < rc.max_interp_s <= 86400, "between 0 and 86400 (seconds)"),
              ("lookback_slots", 1 <= rc.lookback_slots <= 96, "between 1 and 96"),
              ("catchup_days", 0 < rc.catchup_days <= 366, "between 0 and 366"))
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"{where}.{key} must be {what}, not {getattr(rc, key)!r}")
    for key in ("counters", "exclude"):
        if not all(isinstance(x, str) and x for x in getattr(rc, key)):
            raise ConfigError(f"{where}.{key} must be a list of non-empty strings")
    return rc if rc.enabled else None
