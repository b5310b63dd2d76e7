"""The flow component against a real influxd: a counter reset and late data are handled, slots are rewritten."""

from datetime import UTC, datetime, timedelta

import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config
from tests.helpers.agent import wait_for, write_config
from tools.publish import Publisher, seed_message

T0 = datetime(2023, 5, 1, tzinfo=UTC)
FLOW = """
[flow]
delay_s = 0
lookback_slots = 4
late_debounce_s = 0.2
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = { device_id = "g" }
import_field = "EnergyIn"
[[flow.devices]]
role = "pv"
measurement = "PvString"
tags = { device_id = "p" }
import_field = "EnergyOut"
"""


def flow_rows(influxd, db):
    res = influxd.query('SELECT house, pv, grid_import, flags FROM energy_flow', db=db)["results"][0]
    return {r[0]: dict(zip(res["series"][0]["columns"], r, strict=True)) for r in res["series"][0]["values"]} \
        if "series" in res else {}


def ns(t):
    return int(t.timestamp() * 1e9)


def test_reset_and_late_pv_data(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, extra=FLOW,
                       client_id="agent-flowdb")
    agent = Agent(load_config(cfg), clock=lambda: T0 + timedelta(hours=2), components=("flow",))
    agent.start()
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id="pub-flowdb")
    try:
        grid = [10.0, 10.4, 10.9, 0.2, 0.5, 0.9, 1.2, 1.6]  # reset (meter replaced) between readings 2 and 3
        msgs = [seed_message("g", "m", "EnergyMeter", T0 + timedelta(minutes=15 * k), {"EnergyIn": v})
                for k, v in enumerate(grid)]
        # PV readings 4 and 5 are missing (45 min without a reading: not interpolated); 4 arrives late
        pv = [(k, 5.0 + 0.1 * k) for k in range(8) if k not in (4, 5)]
        msgs += [seed_message("p", "s", "PvString", T0 + timedelta(minutes=15 * k), {"EnergyOut": v}) for k, v in pv]
        pub.publish_all(msgs)
        t = [ns(T0 + timedelta(minutes=15 * k)) for k in range(8)]
        rows = wait_for(lambda: t[7] in (r := flow_rows(influxd_session, influx_db_name)) and r, timeout=20)
        assert rows[t[1]]["house"] == pytest.approx(0.4 + 0.1) and rows[t[2]]["house"] == pytest.approx(0.6)
        assert rows[t[3]].get("house") is None and "missing_grid" in rows[t[3]]["flags"]  # reset: not negative
        for k in (4, 5, 6):
            assert rows[t[k]].get("house") is None and "missing_pv" in rows[t[k]]["flags"]
        assert rows[t[7]]["house"] == pytest.approx(0.4 + 0.1)
        assert min(r["house"] for r in rows.values() if r.get("house") is not None) >= 0
        # the late PV reading arrives: slots 4-6 are recomputed and rewritten
        pub.publish_all([seed_message("p", "s", "PvString", T0 + timedelta(minutes=60), {"EnergyOut": 5.4})])
        rows = wait_for(lambda: (r := flow_rows(influxd_session, influx_db_name)).get(t[6], {}).get("house")
                        is not None and r, timeout=20)
        assert [rows[t[k]]["house"] for k in (4, 5, 6)] == pytest.approx([0.4, 0.5, 0.4])
        # slot 4 is exact now; the reading at 75 min is still missing: slots 5 and 6 share a boundary that was
        # interpolated across 30 minutes, and say so
        assert [rows[t[k]]["flags"] for k in (4, 5, 6)] == ["", "interpolated", "interpolated"]
    finally:
        pub.close()
        agent.stop()
