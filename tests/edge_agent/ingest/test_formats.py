"""Each payload format end to end: published with paho / mosquitto_pub, read back from the real influxd."""

import json
import subprocess
from datetime import UTC, datetime

import pytest

from tests.helpers.agent import start_agent, wait_for, write_config
from tools.publish import Publisher, seed_message


@pytest.fixture
def agent_env(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    yield agent, pub, influxd_session, influx_db_name, tmp_path
    pub.close()
    agent.stop()


def rows(influxd, db, q):
    res = influxd.query(q, db=db)["results"][0]
    if "series" not in res:
        return []
    out = []
    for s in res["series"]:
        for v in s["values"]:
            row = dict(zip(s["columns"], v, strict=False))
            row.update(s.get("tags") or {})
            out.append(row)
    return out


def test_seed_json(agent_env):
    agent, pub, db, name, _ = agent_env
    t = datetime(2023, 2, 10, 9, 15, tzinfo=UTC)
    pub.publish_all([seed_message("meter-1", "energy", "EnergyMeter", t, {"EnergyIn": 10688.8, "Power": 812.5},
                                  "Hausanschluss", "grid_meter"),
                     seed_message("bat-1", "state", "Battery", t, {"Soc": 55.0, "Power": -1200.0}),
                     seed_message("pv-1", "string1", "PvString", t, {"Power": 3000, "Voltage": 400.5, "Current": 7.5})])
    got = wait_for(lambda: rows(db, name, 'SELECT * FROM "EnergyMeter","Battery","PvString" GROUP BY *'))
    wait_for(lambda: len(rows(db, name, 'SELECT * FROM "EnergyMeter","Battery","PvString" GROUP BY *')) == 3)
    got = rows(db, name, 'SELECT * FROM "EnergyMeter","Battery","PvString" GROUP BY *')
    by_dev = {r["device_id"]: r for r in got}
    assert by_dev["meter-1"]["EnergyIn"] == 10688.8 and by_dev["meter-1"]["Power"] == 812.5
    assert by_dev["meter-1"]["device_name"] == "Hausanschluss" and by_dev["meter-1"]["device_type"] == "grid_meter"
    assert by_dev["meter-1"]["time"] == int(t.timestamp()) * 10**9  # payload time, not receive time
    assert by_dev["bat-1"]["Soc"] == 55.0 and by_dev["pv-1"]["Current"] == 7.5
    assert by_dev["pv-1"]["channel"] == "string1"  # named topic level → tag


def test_tasmota_with_mosquitto_pub(agent_env, mosquitto_session):
    agent, pub, db, name, _ = agent_env
    payload = {"Time": "2023-07-01T14:00:00", "ENERGY": {"TotalStartTime": "2022-01-01T00:00:00", "Total": 123.456,
               "Yesterday": 1.2, "Today": 0.8, "Power": 150, "ApparentPower": 160, "Factor": 0.94,
               "Voltage": 231, "Current": 0.65}}
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto_session.port), "-q", "1",
                    "-t", "tele/plug-1/SENSOR", "-m", json.dumps(payload)], check=True)
    r = wait_for(lambda: rows(db, name, 'SELECT * FROM "tasmota"'))[0]
    assert r["Total"] == 123.456 and r["Power"] == 150 and r["device"] == "plug-1"
    # Tasmota's Time is local (Europe/Berlin, CEST in July = UTC+2)
    assert r["time"] == int(datetime(2023, 7, 1, 12, 0, tzinfo=UTC).timestamp()) * 10**9


def test_shelly_gen1_plain_numbers(agent_env):
    agent, pub, db, name, _ = agent_env
    pub.publish_all([("shellies/em-1/emeter/0/power", b"512.3"), ("shellies/em-1/emeter/0/energy", b"98765"),
                     ("shellies/em-1/emeter/1/returned_energy", b"12.5"), ("shellies/em-1/emeter/0/voltage", b"230.1")])
    got = wait_for(lambda: (r := rows(db, name, 'SELECT * FROM "shelly_emeter" GROUP BY *')) and
                   sum(len([k for k in x if k in ("power", "energy", "returned_energy", "voltage") and x[k] is not None])
                       for x in r) == 4 and r)
    fields = {(x["channel"], k): x[k] for x in got for k in ("power", "energy", "returned_energy", "voltage")
              if x.get(k) is not None}
    assert fields == {("0", "power"): 512.3, ("0", "energy"): 98765.0, ("1", "returned_energy"): 12.5,
                      ("0", "voltage"): 230.1}


def test_shelly_gen2_status_and_notify(agent_env):
    agent, pub, db, name, _ = agent_env
    status = {"id": 0, "a_current": 1.2, "a_voltage": 230.0, "a_act_power": 250.5, "total_act_power": 700.1,
              "user_calibrated_phase": [], "errors": []}
    notify = {"src": "shellypro3em-abc", "dst": "x", "method": "NotifyStatus",
              "params": {"ts": 1688212800.5, "em:0": {"id": 0, "total_act_power": 650.0, "b_current": 0.9}}}
    pub.publish_all([("shellypro3em-abc/status/em:0", json.dumps(status).encode()),
                     ("shellypro3em-abc/events/rpc", json.dumps(notify).encode())])
    # InfluxDB stores a point field by field: a query under load can see one before the others
    got = wait_for(lambda: len(r := rows(db, name, 'SELECT * FROM "shelly" GROUP BY *')) == 2
                   and all(x["total_act_power"] is not None for x in r) and r)
    by_power = sorted(got, key=lambda r: r["total_act_power"])
    assert by_power[0]["total_act_power"] == 650.0 and by_power[0]["time"] == 1688212800500000000
    assert by_power[0]["component"] == "em:0" and by_power[1]["a_act_power"] == 250.5


def test_plain_number_on_any_topic(agent_env):
    agent, pub, db, name, _ = agent_env
    pub.publish_all([("home/kitchen/temperature", b" 21.5\n")])
    r = wait_for(lambda: rows(db, name, 'SELECT * FROM "sensor"'))[0]
    assert r["temperature"] == 21.5 and r["room"] == "kitchen"


def test_readings_without_a_time_of_their_own_are_not_collapsed(agent_env):
    """A device that sends no timestamp gets the time the message arrived. Readings of one field that arrive
    together (a burst after a reconnect, or within one group commit) used to share one receive time, so InfluxDB
    kept only the last of them."""
    agent, pub, db, name, _ = agent_env
    burst = [("shellies/em-2/emeter/0/power", f"{100 + k}.5".encode()) for k in range(50)]
    pub.publish_all(burst)
    got = wait_for(lambda: len(r := rows(db, name, 'SELECT "power" FROM "shelly_emeter" WHERE "device" = \'em-2\''))
                   >= 50 and r, timeout=20)
    assert sorted(x["power"] for x in got) == [100.5 + k for k in range(50)]
    assert len({x["time"] for x in got}) == 50
