"""Group commit (issue 24, the write budget): messages are written to the database in groups and acknowledged after
it answered; the spool is written only while the database is away or behind; the agent's own health points ride
along; `flush()` commits a group at once. Against the real broker, influxd and the agent."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from edge_agent.runtime.health import process_write_bytes
from tests.helpers.agent import count, spawn_agent, start_agent, wait_for, write_config
from tools.publish import Publisher, seed_message
from tools.services import Influxd

T = datetime(2023, 6, 1, tzinfo=UTC)
DEFAULTS = "commit_interval_s = 8.0\ncommit_max_messages = 16"


def msgs(start: int, n: int):
    return [seed_message("m1", "e", "EnergyMeter", T + timedelta(seconds=i), {"EnergyIn": float(i)})
            for i in range(start, start + n)]


def segment_bytes(agent) -> int:
    return sum(p.stat().st_size for p in agent.ingest.spool.dir.glob("*.seg"))


def config(tmp_path, broker: int, url: str, db: str, spool: str = DEFAULTS):
    cfg = write_config(tmp_path, broker, url, db, client_id=f"agent-{db}", spool=spool)
    text = cfg.read_text().replace("commit_interval_s = 0.1\n", "")  # the helper's fast groups: not here
    cfg.write_text(text)
    return cfg


def test_a_trickle_is_committed_in_groups_and_acknowledged_after(tmp_path, mosquitto_session, influxd_session,
                                                                 influx_db_name):
    agent = start_agent(config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name))
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        t0 = time.monotonic()
        pub.publish_all(msgs(0, 3))
        time.sleep(1.0)
        assert agent.health.get("received") == 0  # held: the group waits for company (the broker keeps them)
        assert count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == 0
        wait_for(lambda: agent.health.get("received") == 3, timeout=20, interval=0.05)
        assert time.monotonic() - t0 > 7  # one group, closed by its interval
        assert count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == 3  # stored before the ack
        # a group closes early once it holds commit_max_messages
        t0 = time.monotonic()
        pub.publish_all(msgs(3, 16))
        wait_for(lambda: agent.health.get("received") == 19, timeout=10, interval=0.05)
        assert time.monotonic() - t0 < 5  # well before the 8 s interval
        # flush(): the flow's barrier before it reads the database
        pub.publish_all(msgs(19, 2))
        wait_for(lambda: len(agent.ingest._queue) == 2 or agent.health.get("received") == 21, timeout=5,
                 interval=0.01)
        t0 = time.monotonic()
        assert agent.ingest.flush(timeout=5)
        assert time.monotonic() - t0 < 4  # not the 8 s interval
        assert count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == 21
        assert segment_bytes(agent) == 0 and agent.health.get("spooled") == 0  # the database answered: no spool
    finally:
        pub.close()
        agent.stop()


def test_the_spool_takes_over_while_the_database_is_away_and_gives_back(tmp_path, mosquitto_session):
    with Influxd(tmp_path / "db") as db:
        agent = start_agent(config(tmp_path, mosquitto_session.port, db.url, "away",
                                   spool="commit_interval_s = 0.2\ncommit_max_messages = 16"))
        pub = Publisher("127.0.0.1", mosquitto_session.port, client_id="pub-away")
        try:
            pub.publish_all(msgs(0, 10))
            wait_for(lambda: count(db, "away", "EnergyMeter", "EnergyIn") == 10, timeout=10)
            db.stop()
            pub.publish_all(msgs(10, 10))
            wait_for(lambda: agent.health.get("received") == 20, timeout=30)  # acknowledged: in the spool
            assert agent.health.get("spooled") >= 10 and segment_bytes(agent) > 0
            db.start()
            wait_for(lambda: count(db, "away", "EnergyMeter", "EnergyIn") == 20, timeout=30)
            wait_for(lambda: agent.ingest.spool.pending_points == 0, timeout=30)
            spooled = agent.health.get("spooled")
            pub.publish_all(msgs(20, 10))
            wait_for(lambda: count(db, "away", "EnergyMeter", "EnergyIn") == 30, timeout=10)
            assert agent.health.get("spooled") == spooled  # straight to the database again
        finally:
            pub.close()
            agent.stop()


def test_the_agent_writes_almost_nothing_of_its_own(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    """Before: every message cost a spool record and a cursor slot, each fsynced (≈ 9 KB at the block device
    per reading in a slow house); the health point went through the spool with an fsync of its own."""
    cfg = config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                 spool="commit_interval_s = 0.5\ncommit_max_messages = 16")
    cfg.write_text(cfg.read_text().replace('file = "agent.log"', "").replace("interval_s = 0.5", "interval_s = 1"))
    proc = spawn_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        wait_for(lambda: process_write_bytes(f"/proc/{proc.pid}/io") is not None
                 and count(influxd_session, influx_db_name, "agent", "received") > 0, timeout=30)
        before = process_write_bytes(f"/proc/{proc.pid}/io")
        for i in range(40):  # a slow house: one message every 0.1 s for 4 s
            pub.publish_all(msgs(i, 1))
            time.sleep(0.1)
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == 40, timeout=15)
        time.sleep(1.5)  # health points meanwhile
        written = process_write_bytes(f"/proc/{proc.pid}/io") - before
        assert written < 16 * 1024, written  # before: a 4 KiB page per record and per cursor move, ≈ 320 KiB
    finally:
        pub.close()
        proc.terminate()
        proc.wait(30)
