"""The [retention] section: how long raw readings stay, where what lasts goes, which fields are counters.

Absent section: retention is off (everything stays in the database's default policy, as before 0.3); the shipped
configurations (Ansible, docker-compose, the examples) turn it on. docs/pi.md "Retention" explains the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config import KEEP_POLICY, AgentConfig, ConfigError, build_dataclass, setting

# Fields aggregated as counters (value at the slot end) unless `counters` says otherwise: the usual names of energy
# counters (seed EnergyIn/EnergyOut, Tasmota Total, Shelly aenergy_total / total_act_energy, *_kwh, *_wh).
DEFAULT_COUNTERS = ("*nergy*", "Total", "*total*", "*_kwh", "*_wh", "*_Wh")
NAMES = "a list of non-empty strings"


def _names(v: list) -> bool:
    return all(isinstance(x, str) and x for x in v)


@dataclass
class RetentionConfig:
    enabled: bool = True
    # raw readings and health: the database's default policy ([storage] retention_policy) …
    raw_days: float = setting(90.0, check=lambda v: 1 <= v <= 36500, wants="between 1 and 36500 (days)")
    # … and at most this much on disk: the oldest raw shard groups dropped (0: no bound)
    raw_max_mb: float = setting(1000.0, check=lambda v: 0 <= v <= 10**7,
                                wants="0 (no size bound) or up to 10000000 (MB)")
    # energy_flow, forecast, forecast_skill, device_slots (checked, and routed to, by edge_agent/config.py)
    keep_policy: str = KEEP_POLICY
    keep_days: float = 0.0  # 0: forever (else at least raw_days: checked in parse_config)
    # shard groups of the raw policy: a week (influxd 1.6 needs memory per shard)
    raw_shard_hours: int = setting(168, check=lambda v: 1 <= v <= 24 * 7, wants="between 1 and 168")
    # two shards a year: influxd holds an index per shard in memory
    keep_shard_days: int = setting(182, check=lambda v: 1 <= v <= 366, wants="between 1 and 366")
    manage_policies: bool = True  # create / alter the policies when the database user may (an admin)
    # field globs
    counters: list[str] = setting(default_factory=lambda: list(DEFAULT_COUNTERS), check=_names, wants=NAMES)
    exclude: list[str] = setting(default_factory=list, check=_names, wants=NAMES)  # measurements (globs) not aggregated
    # after each boundary: the devices' first reading after it must be in (counters)
    delay_s: float = setting(45.0, check=lambda v: 0 <= v < 900, wants="between 0 and 900 (seconds)")
    # a counter's value at a slot end is interpolated across at most this
    max_interp_s: float = setting(1800.0, check=lambda v: 0 < v <= 86400, wants="between 0 and 86400 (seconds)")
    # slots whose counter still lacked a reading after their end are retried this long
    lookback_slots: int = setting(4, check=lambda v: 1 <= v <= 96, wants="between 1 and 96")
    # history aggregated per run after an outage (the rest follows right after)
    catchup_days: float = setting(7.0, check=lambda v: 0 < v <= 366, wants="between 0 and 366")

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
    if not (rc.keep_days == 0 or rc.keep_days >= rc.raw_days):  # the one check across fields
        raise ConfigError(f"{where}.keep_days must be 0 (forever) or at least raw_days, not {rc.keep_days!r}")
    return rc if rc.enabled else None
