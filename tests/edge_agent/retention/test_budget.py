"""The raw policy's size budget (`[retention] raw_max_mb`) against a real influxd: hourly raw shard groups, the
oldest dropped until the rest fits, never one whose aggregates are not all computed, never the group holding now,
never the keep policy; a user that is not an admin turns the `problem` sensor on instead of failing silently."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge_agent.agent import Agent
from edge_agent.config import ConfigError, load_config
from edge_agent.retention import budget
from edge_agent.retention.config import parse_config
from shared.points import Point
from shared.schema import ENERGY_FLOW, SLOT_NS
from shared.series import iso
from shared.storage import StorageConfig, open_storage
from tests.edge_agent.retention.test_retention import END, raw_lines
from tests.helpers.agent import write_config
from tools.services import Influxd

HOUR = 3600 * 10**9
CONFIG = """
[retention]
raw_days = 1
raw_shard_hours = 1
raw_max_mb = {mb}
delay_s = 0
catchup_days = 1
"""


def make_agent(tmp_path, port, url, db, clock_ns, mb=0, storage_extra=""):
    cfg = write_config(tmp_path, port, url, db, extra=CONFIG.format(mb=mb), client_id=f"budget-{tmp_path.name}")
    if storage_extra:
        cfg.write_text(cfg.read_text().replace("[storage]\n", f"[storage]\n{storage_extra}\n", 1))
    return Agent(load_config(cfg), clock=lambda: datetime.fromtimestamp(clock_ns[0] / 1e9, UTC),
                 components=("retention",))


def shards(influxd, db, rp="autogen"):
    rows = influxd.query("SHOW SHARDS")["results"][0]["series"]
    # a database without shards is a series without "values" (other tests' databases on the shared influxd)
    return sorted((budget._ns(v[4]), budget._ns(v[5]), v[0]) for s in rows for v in s.get("values", [])
                  if v[1] == db and v[2] == rp)


def count(influxd, db, source, lo, hi):
    res = influxd.query(f"SELECT count(*) FROM {source} WHERE time >= {lo} AND time < {hi}", db=db)["results"][0]
    return sum(max(v for v in s["values"][0][1:] if v is not None) for s in res.get("series", []))


def setup_house(tmp_path, mosquitto, influxd, db, clock):
    """Eight hours of raw readings in hourly shard groups (the policy shortened before anything is written) and
    one energy_flow point in keep."""
    agent = make_agent(tmp_path, mosquitto.port, influxd.url, db, clock)
    ret = agent.components["retention"]
    ret.start()
    body, _truth = raw_lines(END - 8 * HOUR, END + 300 * 10**9, seed=5)
    agent.storage.write_lines(body)
    agent.storage.write([Point(ENERGY_FLOW, {}, {"house": 1.5}, END - 6 * HOUR)])
    return agent, ret


def test_oldest_covered_shards_dropped_until_under_budget(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    db = influx_db_name
    influxd_session.query("CREATE DATABASE t_budget_no_shards")  # as in the whole suite: a database without shards
    clock = [END + 60 * 10**9]
    agent, ret = setup_house(tmp_path, mosquitto_session, influxd_session, db, clock)
    ret.run_once(END)  # every slot aggregated; raw_max_mb = 0: no size bound yet
    before = budget.raw_shards(agent.storage, db, "autogen")
    assert len(before) >= 8 and agent.health.get("raw_shards_dropped") == 0
    keep_before = shards(influxd_session, db, "keep")
    newest = before[-3:]
    ret.rc.raw_max_mb = sum(s.bytes for s in newest) / 1e6 + 1e-6  # room for the three newest groups
    ret._budget_checked = None  # as at start: the next run checks the size
    ret.run_once(END)

    after = budget.raw_shards(agent.storage, db, "autogen")
    assert [s.id for s in after] == [s.id for s in newest], "the oldest shard groups dropped, the newest kept"
    assert sum(s.bytes for s in after) <= ret.rc.raw_max_mb * 1e6
    assert agent.health.get("raw_shards_dropped") == len(before) - 3
    assert shards(influxd_session, db, "keep") == keep_before, "the keep policy untouched"
    assert count(influxd_session, db, f'"{db}"."keep"."{ENERGY_FLOW}"', 0, END + HOUR) == 1
    gone_lo, gone_hi = before[0].start_ns, newest[0].start_ns
    assert count(influxd_session, db, '"autogen"."EnergyMeter"', gone_lo, gone_hi) == 0
    assert count(influxd_session, db, '"autogen"."EnergyMeter"', gone_hi, END + HOUR) > 0
    # what was dropped lasts: every slot end of its range has both meters' counters and the PV's mean
    ends = range((END - 8 * HOUR) // SLOT_NS * SLOT_NS + 2 * SLOT_NS, gone_hi + 1, SLOT_NS)
    got = influxd_session.query(f'SELECT count("EnergyIn"), count("Power_mean") FROM "keep"."device_slots" '
                                f'WHERE time >= {ends[0]} AND time <= {ends[-1]} GROUP BY time(15m, 1ns)',
                                db=db)["results"][0]["series"][0]["values"]
    assert [r[1:] for r in got if r[0] + SLOT_NS - 1 in ends] == [[2, 1]] * len(ends)
    status = ret.status()["raw_budget"]
    assert status["raw_bytes"] == sum(s.bytes for s in after) and status["raw_max_mb"] == ret.rc.raw_max_mb
    assert status["shards_dropped"] == len(before) - 3 and status["pending"] is None and not status["over_budget"]
    first = min(influxd_session.query(f'SELECT * FROM "autogen"."{m}" ORDER BY time ASC LIMIT 1',
                                      db=db)["results"][0]["series"][0]["values"][0][0] for m in ("EnergyMeter", "PvString"))
    assert status["oldest_raw"] == iso(first) and first >= newest[0].start_ns

    agent.stop()

    # a late reading in a dropped range (InfluxDB takes it: the policy's duration still covers it) does not make
    # the agent — restarted since the drop — recompute those slots from the one reading left
    agent = make_agent(tmp_path / "again", mosquitto_session.port, influxd_session.url, db, clock,
                       mb=ret.rc.raw_max_mb)
    ret = agent.components["retention"]
    ret.run_once(END)
    t_late = gone_lo + 3 * SLOT_NS + 7 * 10**9
    slot = (t_late // SLOT_NS + 1) * SLOT_NS
    q = f"SELECT Power_count, Power_mean FROM \"keep\".\"device_slots\" WHERE time = {slot}"
    was = influxd_session.query(q, db=db)["results"][0]["series"][0]["values"]
    late = f"PvString,device_id=pv Power=99999.0 {t_late}\n".encode()
    agent.storage.write_lines(late)
    ret._on_stored([late])
    ret.run_once(END)
    assert influxd_session.query(q, db=db)["results"][0]["series"][0]["values"] == was
    agent.stop()


def test_shards_wait_for_their_aggregates_and_now_is_never_dropped(tmp_path, mosquitto_session, influxd_session,
                                                                   influx_db_name):
    db = influx_db_name
    clock = [END + 60 * 10**9]
    agent, ret = setup_house(tmp_path, mosquitto_session, influxd_session, db, clock)
    covered_until = END - 4 * HOUR
    ret.run_once(covered_until)  # the aggregates are behind: computed up to four hours ago only
    before = budget.raw_shards(agent.storage, db, "autogen")
    ret.rc.raw_max_mb = 1e-6  # far above budget: everything that may go, goes
    dropped = ret.enforce_budget(clock[0])
    window = ret._window_ns()
    assert dropped and [s.id for s in dropped] == [s.id for s in before if s.end_ns + window <= covered_until]
    assert ret.status()["raw_budget"]["pending"].startswith(f"the aggregates reach {iso(covered_until)}")
    assert ret.status()["raw_budget"]["over_budget"]
    left = budget.raw_shards(agent.storage, db, "autogen")
    assert left[0].end_ns + window > covered_until, "a shard whose aggregates are not all computed is kept"

    ret._budget_checked = None
    ret.run_once(END)  # caught up: now the rest may go, but not what the newest slots read nor the group of now
    left = budget.raw_shards(agent.storage, db, "autogen")
    assert left and all(s.end_ns + window > END for s in left)
    assert any(s.start_ns <= clock[0] < s.end_ns for s in left), "the shard group holding now is kept"
    assert agent.health.get("raw_shards_dropped") == len(before) - len(left)
    agent.stop()


def test_without_admin_rights_the_admin_command_does_it_and_the_problem_says_when_nobody_can(tmp_path,
                                                                                            mosquitto_session):
    """Ansible's setup: the agent's user has ALL on its database, not admin. The agent cannot measure or drop
    (problem `raw_over_budget`); `edge-agent raw-budget` with the admin's credentials applies the same rule and
    leaves its outcome for the agent's status; when that goes stale the problem returns."""
    import json

    from edge_agent.cli import main as cli

    with Influxd(tmp_path / "auth", auth=True) as influxd:
        influxd.query("CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES", method="POST")
        admin = open_storage(StorageConfig(url=influxd.url, database="energy", username="admin", password="adminpw"))
        for q in ('CREATE DATABASE "energy"', "CREATE USER edge WITH PASSWORD 'edgepw'", 'GRANT ALL ON "energy" TO edge',
                  # the policies as the influxdb role's setup makes them
                  'CREATE RETENTION POLICY "keep" ON "energy" DURATION INF REPLICATION 1 SHARD DURATION 4368h',
                  'ALTER RETENTION POLICY "autogen" ON "energy" DURATION 24h SHARD DURATION 1h'):
            admin.query(q)
        clock = [END + 60 * 10**9]
        agent = make_agent(tmp_path, mosquitto_session.port, influxd.url, "energy", clock, mb=1e-6,
                           storage_extra='username = "edge"\npassword = "edgepw"\ncreate_database = false')
        ret = agent.components["retention"]
        ret.start()
        agent.storage.write_lines(raw_lines(END - 6 * HOUR, END + 300 * 10**9, seed=6)[0])
        ret.run_once(END)  # the aggregates, then the size check at start: refused
        assert agent.health.get("slot_aggregates_written") > 0 and agent.health.get("raw_shards_dropped") == 0
        assert ret.status()["raw_budget"]["pending"].startswith("the database user may not")
        found = [p for p in agent.problems.check() if p["code"] == "raw_over_budget"]
        assert len(found) == 1 and "raw_max_mb = 1e-06 cannot be kept" in found[0]["message"]

        n = len(budget.raw_shards(admin, "energy", "autogen"))
        secret = tmp_path / "influxdb-admin"
        secret.write_text("adminpw\n")
        assert cli(["raw-budget", "--config", str(agent.config.path), "--admin-user", "admin",
                    "--admin-password-file", str(secret)]) == 0
        left = budget.raw_shards(admin, "energy", "autogen")
        assert 0 < len(left) < n - 3, "the admin's run dropped the covered shards"
        ret._budget_checked = None
        ret.run_once(END)
        st = ret.status()["raw_budget"]
        assert st["by"] == "edge-agent raw-budget" and st["dropped_now"] == n - len(left)
        assert st["raw_bytes"] == sum(s.bytes for s in left)
        assert not [p for p in agent.problems.check() if p["code"] == "raw_over_budget"]

        path = agent.config.state_dir / "raw_budget.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"at_s": clock[0] / 1e9 - 4 * 3600}))
        ret._budget_checked = None
        ret.run_once(END)
        found = [p for p in agent.problems.check() if p["code"] == "raw_over_budget"]
        assert len(found) == 1 and "last ran 4 h ago" in found[0]["message"]
        assert cli(["raw-budget", "--config", str(agent.config.path), "--admin-user", "admin",
                    "--admin-password-file", str(tmp_path / "missing")]) == 1, "no password file: fails loudly"
        ret._budget_checked = None
        ret.run_once(END)
        found = [p for p in agent.problems.check() if p["code"] == "raw_over_budget"]
        assert len(found) == 1 and "cannot read the admin's password file" in found[0]["message"]
        assert cli(["raw-budget", "--config", str(agent.config.path), "--admin-user", "edge",
                    "--admin-password-file", str(secret)]) == 1, "refused credentials: fails loudly"
        admin.close()
        agent.stop()


@pytest.mark.parametrize("value", ["-1", "1e8", '"big"'])
def test_raw_max_mb_errors_name_the_key(tmp_path, value):
    path = write_config(tmp_path, 1883, "http://127.0.0.1:8086", "energy", extra=f"[retention]\nraw_max_mb = {value}\n")
    with pytest.raises(ConfigError, match=r"\[retention\]\.?raw_max_mb"):
        parse_config(load_config(path))  # load_config routes what lasts: it parses [retention] already


def test_plan_stops_at_the_group_holding_now():
    """The plan itself never reaches the group being written, whatever the budget (the aggregates' rule keeps it
    too, so the component's tests cannot tell the two apart)."""
    s = [budget.Shard(i, i * HOUR, (i + 1) * HOUR, 100) for i in range(5)]
    assert budget.over_budget(s, 250, 10 * HOUR) == s[:3]
    assert budget.over_budget(s, 0, 3 * HOUR + 1) == s[:3], "shard 3 holds now: neither it nor what follows"
    assert budget.over_budget(s, 500, 10 * HOUR) == []
