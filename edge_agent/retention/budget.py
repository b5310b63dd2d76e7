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

The agent enforces the budget itself when its database user is an admin. When it is not (Ansible: the agent's
user has ALL on its database only), the same rule runs as the admin: `edge-agent raw-budget` (hourly from the
edge_agent role's timer) writes its outcome to `<state_dir>/raw_budget.json`, which the agent shows in its status;
when neither can act (no admin, or that file older than STALE_S) the `problem` sensor reports `raw_over_budget`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge_agent.retention import policies
from edge_agent.retention.config import RetentionConfig
from edge_agent.runtime.durable import replace_file
from shared.schema import DEVICE_SLOTS, SLOT_NS
from shared.series import iso
from shared.storage import Storage, StorageError

log = logging.getLogger(__name__)

NEEDS_ADMIN = ("the database user may not measure or drop shards (SHOW STATS, SHOW SHARDS and DROP SHARD need an "
               "InfluxDB admin)")
ADMIN_COMMAND = "edge-agent raw-budget"
STATE_FILE = "raw_budget.json"
STALE_S = 3 * 3600  # the admin's hourly run missed three times


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
    """InfluxDB 1.x's answer to a statement only an admin may run (1.6.7: HTTP 403 "… requires admin
    privilege"; 401: the credentials themselves were refused)."""
    return getattr(exc, "status", None) in (401, 403) or "requires admin privilege" in str(exc)


def window_ns(rc: RetentionConfig) -> int:
    """Slots after a raw range read its readings up to max_interp_s back (a counter's interpolation)."""
    return -(-int(rc.max_interp_s * 1e9) // SLOT_NS) * SLOT_NS


def enforce(storage: Storage, database: str, rp: str, rc: RetentionConfig, until_ns: int | None,
            now_ns: int) -> tuple[list[Shard], dict]:
    """Drop the oldest shards while the policy is above `raw_max_mb`, each only when the aggregates reach its end
    plus the interpolation window and policies.uncovered finds nothing it would lose; returns (dropped, state
    for the status). `until_ns`: the newest slot end aggregated. A user without admin rights: state["pending"]
    is NEEDS_ADMIN and nothing is dropped."""
    limit = int(rc.raw_max_mb * 1e6)
    state: dict = {"raw_max_mb": rc.raw_max_mb, "checked_at": iso(now_ns), "pending": None}
    try:
        shards = raw_shards(storage, database, rp)
    except StorageError as exc:
        if not requires_admin(exc):
            raise
        state["pending"] = NEEDS_ADMIN
        # info: the problem sensor (and its warning in the log) says it when nobody else keeps the budget either
        log.info("retention: raw_max_mb = %g cannot be kept here: %s (%s)", rc.raw_max_mb, NEEDS_ADMIN, exc)
        return [], state
    state["raw_bytes_before"] = sum(s.bytes for s in shards)
    dropped: list[Shard] = []
    total = state["raw_bytes_before"]
    for s in over_budget(shards, limit, now_ns):
        need = s.end_ns + window_ns(rc)
        if until_ns is None or until_ns < need:
            lost = [f"the aggregates reach {iso(until_ns) if until_ns else 'nothing yet'}, the shard needs them to "
                    f"{iso(need)}"]
        else:
            lost = policies.uncovered(storage, database, rp, rc.keep_policy, s.end_ns)
        if lost:
            state["pending"] = "; ".join(lost)
            log.info("retention: raw readings %.1f MB, above raw_max_mb = %g, but shard %d (%s to %s) is kept for "
                     "now: %s", total / 1e6, rc.raw_max_mb, s.id, iso(s.start_ns), iso(s.end_ns), state["pending"])
            break
        try:
            storage.query(f"DROP SHARD {s.id}")
        except StorageError as exc:
            if not requires_admin(exc):
                raise
            state["pending"] = NEEDS_ADMIN
            log.info("retention: DROP SHARD refused (%s): %s", exc, NEEDS_ADMIN)
            break
        dropped.append(s)
        log.info("retention: dropped raw shard %d (%s to %s, %.1f MB): raw readings were %.1f MB, above "
                 "raw_max_mb = %g", s.id, iso(s.start_ns), iso(s.end_ns), s.bytes / 1e6, total / 1e6, rc.raw_max_mb)
        total -= s.bytes
    raw_bytes = total
    held = [s.start_ns for s in shards if s not in dropped]
    state["held_from_ns"] = min(held) if held else None
    oldest = [t for m in policies.device_measurements(storage, database, rp, rc.exclude)
              if (t := policies.first_time(storage, policies.qualified(database, rp, m))) is not None]
    state.update(raw_bytes=raw_bytes, raw_mb=round(raw_bytes / 1e6, 1), over_budget=raw_bytes > limit,
                 oldest_raw=iso(min(oldest)) if oldest else None, dropped_now=len(dropped))
    return dropped, state


def read_state(state_dir: Path) -> dict | None:
    """What the admin's last `edge-agent raw-budget` found (None: it never ran)."""
    try:
        return json.loads((Path(state_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_state(state_dir: Path, state: dict) -> None:
    replace_file(Path(state_dir) / STATE_FILE, json.dumps(state).encode(), mode=0o644)  # the agent (another user) reads it


def problem(state: dict, raw_max_mb: float, now_ns: int) -> str | None:
    """Why raw readings may grow past the budget, for the `problem` sensor (None: they do not)."""
    if state.get("pending") == NEEDS_ADMIN:
        return (f"raw_max_mb = {raw_max_mb:g} cannot be kept: {NEEDS_ADMIN}, and no {ADMIN_COMMAND} run as the admin "
                f"has reported ({STATE_FILE} missing)")
    if state.get("by") == ADMIN_COMMAND:
        age = now_ns / 1e9 - float(state.get("at_s") or 0)
        if age > STALE_S:
            return (f"raw_max_mb = {raw_max_mb:g}: {ADMIN_COMMAND} (the admin's hourly timer) last ran "
                    f"{age / 3600:.0f} h ago")
        if state.get("error"):
            return f"raw_max_mb = {raw_max_mb:g}: {ADMIN_COMMAND} failed: {state['error']}"
    return None


def run_as_admin(config_path: str, admin_user: str, password_file: str) -> int:
    """`edge-agent raw-budget`: the agent's rule, run with the admin's credentials (for a setup where the agent's
    user is not an admin); the outcome goes to `<state_dir>/raw_budget.json` for the agent's status."""
    from edge_agent.config import load_config
    from edge_agent.retention.config import parse_config
    from shared.storage import StorageConfig, open_storage

    cfg = load_config(config_path)
    rc = parse_config(cfg)
    if rc is None or not rc.raw_max_mb:
        print("raw-budget: [retention] is off or raw_max_mb = 0: nothing to do")
        return 0
    now_ns = time.time_ns()
    state: dict = {"raw_max_mb": rc.raw_max_mb, "by": ADMIN_COMMAND, "at_s": round(now_ns / 1e9)}
    try:
        password = (Path(password_file).read_text().splitlines() or [""])[0]
    except OSError as exc:
        state["error"] = f"cannot read the admin's password file {password_file}: {exc.strerror}"
        write_state(cfg.state_dir, state)
        print(json.dumps(state))
        return 1
    st = cfg.storage
    storage = open_storage(StorageConfig(url=st.url, database=st.database, username=admin_user, password=password,
                                         retention_policy=st.retention_policy, keep_policy=rc.keep_policy,
                                         timeout_s=st.timeout_s, deadline_s=max(st.deadline_s, 300)))
    try:
        rp = policies.raw_policy_name(storage, st.database, st.retention_policy)
        last = storage.query(f"SELECT * FROM {storage.source(DEVICE_SLOTS)} ORDER BY time DESC LIMIT 1")
        until = int(last[0]["time"]) if last else None
        if rp is None:
            raise StorageError(f"no default retention policy on {st.database!r}", retryable=False)
        _dropped, found = enforce(storage, st.database, rp, rc, until, now_ns)
        state |= found
        if found.get("pending") == NEEDS_ADMIN:
            state["error"] = f"{admin_user!r} is not an InfluxDB admin"
    except StorageError as exc:
        state["error"] = str(exc)
    finally:
        storage.close()
    write_state(cfg.state_dir, state)
    print(json.dumps(state))
    return 1 if state.get("error") else 0


def add_subcommand(sub) -> None:
    cmd = sub.add_parser("raw-budget", help="hold the raw readings to [retention] raw_max_mb as the InfluxDB admin "
                                            "(when the agent's own user is not one; Ansible runs it hourly)")
    cmd.add_argument("--config", required=True)
    cmd.add_argument("--admin-user", required=True)
    cmd.add_argument("--admin-password-file", required=True, help="first line: the admin's password")
    cmd.set_defaults(func=lambda a: run_as_admin(a.config, a.admin_user, a.admin_password_file))
