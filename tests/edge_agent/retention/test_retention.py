"""Retention against a real influxd: the two policies, what lasts routed to `keep`, the per-device 15-minute
aggregates equal to what numpy computes from the raw readings, recomputed after an outage and after late data,
and the migration of a database that kept everything (the raw policy shortened only once nothing is lost)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config
from shared.points import Point
from shared.schema import ENERGY_FLOW, SLOT_NS
from tests.helpers.agent import write_config

RETENTION = """
[retention]
raw_days = {raw_days}
delay_s = 0
catchup_days = {catchup}
"""
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
END = int(NOW.timestamp()) * 10**9 // SLOT_NS * SLOT_NS - 2 * SLOT_NS  # a boundary in the recent past


def raw_lines(start_ns: int, end_ns: int, seed: int = 1) -> tuple[bytes, dict]:
    """Two meters (counter every ~7 s, unaligned, ns jitter) and a PV power reading every ~11 s."""
    rng = np.random.default_rng(seed)
    out, truth = [], {}
    for dev, step in (("g1", 7.0), ("g2", 9.5)):
        t = start_ns + int(rng.uniform(0, step) * 1e9) + np.cumsum(rng.uniform(0.8, 1.2, int((end_ns - start_ns) / 1e9 / step))
                                                                   * step * 1e9).astype(np.int64)
        t = t[t < end_ns]
        c = 1000 + np.cumsum(rng.uniform(0, 0.01, len(t)))
        out += [f"EnergyMeter,device_id={dev} EnergyIn={v!r} {ts}" for ts, v in zip(t.tolist(), c.tolist(), strict=True)]
        truth[("EnergyMeter", dev, "EnergyIn")] = (t, c)
    t = start_ns + np.cumsum(rng.uniform(9, 13, int((end_ns - start_ns) / 11e9)) * 1e9).astype(np.int64)
    t = t[t < end_ns]
    p = rng.uniform(0, 5000, len(t)).round(1)
    out += [f"PvString,device_id=pv Power={v!r} {ts}" for ts, v in zip(t.tolist(), p.tolist(), strict=True)]
    truth[("PvString", "pv", "Power")] = (t, p)
    return ("\n".join(out) + "\n").encode(), truth


def expected_counter(t: np.ndarray, c: np.ndarray, b: int) -> float:
    i = np.searchsorted(t, b, side="right")  # readings <= b: [:i]
    if t[i - 1] == b:
        return float(c[i - 1])
    return float(c[i - 1] + (b - t[i - 1]) / (t[i] - t[i - 1]) * (c[i] - c[i - 1]))


def slots(influxd, db, field, where=""):
    res = influxd.query(f'SELECT "{field}" FROM "keep"."device_slots" {where}', db=db)["results"][0]
    return res["series"][0]["values"] if "series" in res else []


def make_agent(tmp_path, mosquitto, influxd, db, clock_ns, raw_days=90, catchup=7):
    cfg = write_config(tmp_path, mosquitto.port, influxd.url, db,
                       extra=RETENTION.format(raw_days=raw_days, catchup=catchup), client_id=f"ret-{tmp_path.name}")
    return Agent(load_config(cfg), clock=lambda: datetime.fromtimestamp(clock_ns[0] / 1e9, UTC),
                 components=("retention",))


def test_policies_routing_and_aggregates(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    db = influx_db_name
    body, truth = raw_lines(END - 3 * 3600 * 10**9, END + 600 * 10**9)
    clock = [END + 60 * 10**9]
    agent = make_agent(tmp_path, mosquitto_session, influxd_session, db, clock)
    agent.storage.write_lines(body)
    ret = agent.components["retention"]
    ret.run_once(END)
    rps = {r[0]: r for r in influxd_session.query("SHOW RETENTION POLICIES", db=db)["results"][0]["series"][0]["values"]}
    assert rps["autogen"][1] == "2160h0m0s" and rps["autogen"][2] == "168h0m0s" and rps["autogen"][4] is True
    assert rps["keep"][1] == "0s" and rps["keep"][4] is False
    assert ret.status()["policies"]["pending"] is None

    # what lasts goes to keep through every Storage of this config; raw readings stay in the default policy
    agent.storage.write([Point(ENERGY_FLOW, {}, {"house": 1.5}, END)])
    assert influxd_session.query(f'SELECT house FROM "keep"."{ENERGY_FLOW}"', db=db)["results"][0]["series"]
    assert "series" not in influxd_session.query(f'SELECT house FROM "{ENERGY_FLOW}"', db=db)["results"][0]
    assert agent.storage.query_series(ENERGY_FLOW, "house", NOW - timedelta(days=1), NOW + timedelta(days=1)) \
        == [(END, 1.5)]

    # counters: the value at each slot end, interpolated between the readings around it (shared.series rule)
    for dev in ("g1", "g2"):
        t, c = truth[("EnergyMeter", dev, "EnergyIn")]
        got = dict(slots(influxd_session, db, "EnergyIn", f"WHERE device_id = '{dev}'"))
        ends = [b for b in range(END - 2 * 3600 * 10**9, END + 1, SLOT_NS)]
        assert set(ends) <= set(got), "every slot end after the first readings is aggregated"
        for b in ends:
            assert got[b] == pytest.approx(expected_counter(t, c, b), abs=1e-9)
    # gauges: mean, min, max, count over (T - 15 min, T]
    t, p = truth[("PvString", "pv", "Power")]
    rows = {r[0]: r[1:] for r in influxd_session.query(
        'SELECT Power_mean, Power_min, Power_max, Power_count FROM "keep"."device_slots" WHERE device_id = \'pv\' '
        'AND "measurement" = \'PvString\'', db=db)["results"][0]["series"][0]["values"]}
    for b in range(END - 2 * 3600 * 10**9, END + 1, SLOT_NS):
        inside = p[(t > b - SLOT_NS) & (t <= b)]
        assert rows[b] == pytest.approx([inside.mean(), inside.min(), inside.max(), len(inside)])
    # the newest boundary's counters wait for a reading after it: END's are in, END + 1 slot not yet
    assert END + SLOT_NS not in dict(slots(influxd_session, db, "EnergyIn"))
    agent.stop()


def test_outage_and_late_readings_are_recomputed(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    db = influx_db_name
    start = END - 10 * 3600 * 10**9
    body, truth = raw_lines(start, END + 300 * 10**9, seed=2)
    lines = body.splitlines(keepends=True)
    cut = END - 6 * 3600 * 10**9
    first = [ln for ln in lines if int(ln.rsplit(b" ", 1)[1]) < cut + 300 * 10**9]
    clock = [cut + 60 * 10**9]
    agent = make_agent(tmp_path / "a", mosquitto_session, influxd_session, db, clock, catchup=0.1)
    agent.storage.write_lines(b"".join(first))
    ret = agent.components["retention"]
    while ret.run_once(cut) and ret.until < cut:  # catch up from the oldest reading, 0.1 day per run
        pass
    assert ret.until == cut
    agent.stop()

    # the agent is down for six hours while the readings keep coming (one reading of g1 is held back)
    late = next(ln for ln in lines if ln.startswith(b"EnergyMeter,device_id=g1")
                and END - 3 * 3600 * 10**9 < int(ln.rsplit(b" ", 1)[1]) < END - 3 * 3600 * 10**9 + 60 * 10**9)
    later = [ln for ln in lines if ln not in first and ln != late]
    agent2 = make_agent(tmp_path / "b", mosquitto_session, influxd_session, db, clock)
    agent2.storage.write_lines(b"".join(later))
    clock[0] = END + 60 * 10**9
    ret2 = agent2.components["retention"]
    ret2.run_once(END)
    assert ret2.until == END, "resumed from the newest aggregate in the database, not from scratch"
    t, c = truth[("EnergyMeter", "g1", "EnergyIn")]
    got = dict(slots(influxd_session, db, "EnergyIn", "WHERE device_id = 'g1'"))
    for b in range(start + SLOT_NS, END + 1, SLOT_NS):
        assert b in got, f"slot {(b - cut) / SLOT_NS} slots after the cut missing after the outage"
    t_late = int(late.rsplit(b" ", 1)[1])
    b_late = (t_late // SLOT_NS + 1) * SLOT_NS  # the boundary after the held-back reading
    keep = np.ones(len(t), bool)
    keep[np.searchsorted(t, t_late)] = False
    assert got[b_late] == pytest.approx(expected_counter(t[keep], c[keep], b_late))

    # the reading arrives late: the drainer hands its line to the listeners, the slots around it are redone
    agent2.storage.write_lines(late)
    ret2._on_stored([late])
    ret2.run_once(END)
    got = dict(slots(influxd_session, db, "EnergyIn", "WHERE device_id = 'g1'"))
    assert got[b_late] == pytest.approx(expected_counter(t, c, b_late), abs=1e-9)
    agent2.stop()


def test_migration_shortens_raw_only_when_covered(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    """A database that kept everything in autogen (INF): the keep policy is made, energy_flow is copied into it,
    the history is aggregated from its oldest reading, and only then is autogen shortened."""
    db = influx_db_name
    start = END - 3 * 86400 * 10**9  # three days of history, one day of raw retention wanted
    body, _truth = raw_lines(start, END + 300 * 10**9, seed=3)
    influxd_session.write_raw(db, body)
    influxd_session.write_raw(db, f"energy_flow house=0.25 {start + SLOT_NS}\n".encode())
    clock = [END + 60 * 10**9]
    agent = make_agent(tmp_path, mosquitto_session, influxd_session, db, clock, raw_days=1, catchup=1)
    ret = agent.components["retention"]
    ret.run_once(END)  # copies energy_flow, aggregates the first day: not yet safe to shorten
    assert influxd_session.query('SELECT house FROM "keep"."energy_flow"', db=db)["results"][0]["series"]
    rps = {r[0]: r for r in influxd_session.query("SHOW RETENTION POLICIES", db=db)["results"][0]["series"][0]["values"]}
    assert rps["autogen"][1] == "0s", "nothing is deleted before it is covered"
    assert ret.status()["policies"]["pending"]
    for _ in range(5):
        ret.run_once(END)
    rps = {r[0]: r for r in influxd_session.query("SHOW RETENTION POLICIES", db=db)["results"][0]["series"][0]["values"]}
    assert rps["autogen"][1] == "24h0m0s" and rps["autogen"][2] == "24h0m0s"  # shards: at most the duration
    assert ret.status()["policies"]["pending"] is None
    first_slot = slots(influxd_session, db, "EnergyIn", "ORDER BY time ASC LIMIT 1")[0][0]
    assert first_slot <= start + 2 * SLOT_NS
    agent.stop()


def test_readings_older_than_the_raw_retention_are_dead_lettered(tmp_path, mosquitto_session, influxd_session,
                                                                 influx_db_name):
    """InfluxDB drops points older than the policy and answers 400 "partial write … dropped=N" having stored the
    rest: the drainer dead-letters exactly the N oldest with the reason, without splitting the batch."""
    import json

    from edge_agent.ingest.drain import TOO_OLD
    from tests.helpers.agent import count, start_agent, wait_for
    from tools.publish import Publisher, seed_message

    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       extra=RETENTION.format(raw_days=1, catchup=1), client_id="ret-old")
    agent = start_agent(cfg, components=("retention",))
    wait_for(lambda: agent.components["retention"].status()["policies"].get("keep_exists"), timeout=20)
    old, fresh = NOW - timedelta(days=3), NOW - timedelta(minutes=5)
    msgs = [seed_message("m1", "c", "EnergyMeter", t, {"EnergyIn": float(i)})
            for i, t in enumerate([old, fresh, old - timedelta(hours=1), fresh + timedelta(seconds=1)])]
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id="pub-ret-old")
    try:
        pub.publish_all(msgs)
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "EnergyIn") == 2, timeout=20)
        dead = agent.config.resolve(agent.config.ingest.deadletter)
        entries = wait_for(lambda: [json.loads(x) for x in dead.read_text().splitlines()] if dead.exists() else [],
                           timeout=10)
        assert len(entries) == 2 and all(e["reason"] == TOO_OLD or TOO_OLD in json.dumps(e) for e in entries)
        assert agent.health.get("stored") == 2
    finally:
        pub.close()
        agent.stop()


def test_server_pull_reads_expired_history_from_the_aggregates(tmp_path, mosquitto_session, influxd_session,
                                                               influx_db_name):
    """Once raw readings expire, the server's pull takes the counter at each slot end from device_slots: the
    slots computed from the pull equal those from the raw readings, before and after the raw retention."""
    import csv
    import json
    from types import SimpleNamespace

    from server.pull import pull_history
    from shared.series import Readings, counter_to_slots

    db = influx_db_name
    start = END - 3 * 86400 * 10**9
    body, truth = raw_lines(start, END + 300 * 10**9, seed=4)
    influxd_session.write_raw(db, body)
    clock = [END + 60 * 10**9]
    agent = make_agent(tmp_path, mosquitto_session, influxd_session, db, clock, raw_days=1, catchup=4)
    agent.components["retention"].run_once(END)
    agent.components["retention"].run_once(END)
    assert agent.components["retention"].status()["policies"]["pending"] is None
    cutoff = END - 86400 * 10**9
    influxd_session.query(f'DELETE FROM "EnergyMeter" WHERE time < {cutoff}', db=db, method="POST")  # expired
    agent.stop()

    node = {"id": 7, "name": "house", "influx": json.dumps({"url": influxd_session.url, "database": db,
                                                             "measurement": "EnergyMeter", "field": "EnergyIn",
                                                             "tags": {"device_id": "g1"}})}
    iso = lambda ns: datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
    out = pull_history(SimpleNamespace(cache_dir=tmp_path / "cache"), node,
                       {"start": iso(start), "end": iso(END + 300 * 10**9)}, lambda f, s: None)
    with open(out["file"]) as f:
        rows = [(int(datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() * 1e9),
                 float(r["value"])) for r in csv.DictReader(f)]
    pulled = counter_to_slots(Readings.from_rows(rows), start + SLOT_NS, END, mask_quantised=False)
    t, c = truth[("EnergyMeter", "g1", "EnergyIn")]
    raw = counter_to_slots(Readings.from_rows(zip(t.tolist(), c.tolist(), strict=True)), start + SLOT_NS, END,
                           mask_quantised=False)
    ok = np.isfinite(raw.values)
    assert ok.sum() > 250 and np.isfinite(pulled.values[ok]).all()
    assert np.allclose(pulled.values[ok], raw.values[ok], atol=1e-9)
    assert min(r[0] for r in rows) < cutoff and any(r[0] % SLOT_NS for r in rows if r[0] > cutoff)
