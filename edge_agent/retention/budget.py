"""A size budget for the raw policy on InfluxDB 1.x (`[retention] raw_max_mb`): its oldest shard groups dropped.

`raw_days` bounds raw readings by age, but their size follows the devices' rates: a 20-device house reporting every
second writes ≈ 33 MB a day into influxd, so 90 days are ≈ 3 GB (docs/pi.md "Retention measured"). The size is
what the card has; nobody should have to compute raw_days from rates.

Measured with what influxd itself reports: `SHOW SHARDS` (each shard's time range; one shard per shard group with
replication 1) and `SHOW STATS FOR 'shard'` (`diskBytes` per shard: its TSM files and its WAL, updated at every
call — checked on 1.6.7). Not counted: the database's series file and index (`_series`, ~34 MB from the start) and
the keep policy. Both statements and `DROP SHARD` need an InfluxDB admin.

Dropping is a plan over the shards, oldest first, while the raw policy is above the budget: never a shard whose
range reaches past now (the group being written), never another policy's shard, and only a shard whose whole
range is covered by what lasts — the rule the component applies before shortening the raw policy
(`policies.uncovered`): device_slots from the oldest raw reading on and computed up to the shard's end plus the
counter interpolation window, energy_flow / forecast / forecast_skill copied into keep. InfluxDB 2.x: not
supported (no shards to drop there; no 2.x server could be run here to build it against).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.storage import Storage


@dataclass(frozen=True)
class Shard:
    id: int
    start_ns: int
    end_ns: int
    bytes: int


def _ns(text: str) -> int:
    """SHOW SHARDS' RFC 3339 times (strings even with epoch=ns) in ns."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()) * 10**9


def raw_shards(storage: Storage, database: str, rp: str) -> list[Shard]:
    """The policy's shards, oldest first, each with its size on disk (TSM files + WAL)."""
    sizes: dict[str, int] = {}
    for row in storage.query("SHOW STATS FOR 'shard'"):
        if row.get("database") == database and row.get("retentionPolicy") == rp and "id" in row:
            sizes[str(row["id"])] = int(row.get("diskBytes") or 0)
    out = []
    for row in storage.query("SHOW SHARDS"):
        if row.get("database") == database and row.get("retention_policy") == rp and row.get("id") is not None:
            out.append(Shard(int(row["id"]), _ns(row["start_time"]), _ns(row["end_time"]),
                             sizes.get(str(row["id"]), 0)))
    return sorted(out, key=lambda s: (s.start_ns, s.id))


def over_budget(shards: list[Shard], budget_bytes: int, now_ns: int) -> list[Shard]:
    """The oldest shards to drop until the rest fits the budget, stopping at one that reaches past now."""
    total = sum(s.bytes for s in shards)
    out = []
    for s in shards:
        if total <= budget_bytes or s.end_ns > now_ns:
            break
        out.append(s)
        total -= s.bytes
    return out


def requires_admin(exc: Exception) -> bool:
    """InfluxDB 1.x's answer to a statement only an admin may run (HTTP 403, or 'requires admin privilege')."""
    return getattr(exc, "status", None) in (401, 403) or "admin" in str(exc)
