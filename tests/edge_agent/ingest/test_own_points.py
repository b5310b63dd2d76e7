"""The status's `stored` counts device points only; the agent's own health points are `stored_own` (issue 25: the
demo's status said stored 68,083 of received 68,057)."""

from datetime import UTC, datetime, timedelta

from tests.helpers.agent import count, start_agent, wait_for, write_config
from tools.publish import Publisher, seed_message


def test_own_health_points_are_counted_apart(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")  # health.interval_s = 0.5: a point every half second
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        n = pub.publish_all([seed_message("m1", "c", "EnergyMeter", t0 + timedelta(seconds=k), {"EnergyIn": k})
                             for k in range(50)])
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == n, timeout=20)
        wait_for(lambda: agent.health.get("stored_own") >= 3, timeout=20)
        wait_for(lambda: agent.ingest.spool.pending_points == 0)
        h = agent.health
        assert h.get("received") == h.get("stored") == n, h.snapshot()
        own = h.get("stored_own")
        assert own >= 3 and count(influxd_session, influx_db_name, "agent", "received") >= own
    finally:
        pub.close()
        agent.stop()
