"""Dashboards: structure, drift from the generator, and every panel query against a real influxd holding data
that went through the agent (MQTT → agent → influxd): the real meter + the PV/battery scenario, flow computed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.grafana import generate
from shared.points import Point
from shared.series import read_csv
from tests.edge.agentutil import count, wait_for, write_config
from tests.support import scenario
from tests.support.publish import Publisher, counter_messages

PROV = generate.OUT
START = datetime(2023, 7, 1, tzinfo=UTC)
DAYS = 3
END = START + timedelta(days=DAYS)


def boards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((PROV / "dashboards" / "home-energy").glob("*.json"))]


def test_committed_files_equal_the_generator():
    for rel, text in generate.files().items():
        assert (PROV / rel).read_text() == text, f"{rel} drifted: run python -m edge_agent.grafana.generate"
    assert {b["title"] for b in boards()} == {"Energy flow", "Power by device", "Forecast vs actual",
                                             "Edge agent health"}


def test_structure_ids_grid_datasources_core_panels():
    uids = set()
    for rel in ("datasources/influxdb-v1.yaml", "datasources/influxdb-v2.yaml"):
        doc = yaml.safe_load((PROV / rel).read_text())
        uids |= {d["uid"] for d in doc["datasources"]}
    for b in boards():
        ids = [p["id"] for p in b["panels"]]
        assert len(ids) == len(set(ids)), b["title"]
        cells = set()
        for p in b["panels"]:
            assert p["type"] in generate.CORE_PANELS, p["type"]
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not mine & cells, f"{b['title']}: panel {p['title']} overlaps"
            cells |= mine
            assert p["datasource"]["uid"] in uids
            for t in p["targets"]:
                assert t["datasource"]["uid"] in uids and t["rawQuery"]
    flow = next(b for b in boards() if b["title"] == "Energy flow")
    assert any(p["type"] == "canvas" for p in flow["panels"])


def grafana_macros(query: str, start: datetime, end: datetime, interval: str = "15m") -> str:
    """Substitute the macros as Grafana's InfluxQL datasource does."""
    ms = lambda t: int(t.timestamp() * 1000)  # noqa: E731
    query = query.replace("$timeFilter", f"time >= {ms(start)}ms and time <= {ms(end)}ms")
    query = query.replace("$__interval_ms", str(15 * 60 * 1000)).replace("$__interval", interval)
    query = query.replace("$__from", str(ms(start))).replace("$__to", str(ms(end)))
    assert "$" not in query, query
    return query


@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory, mosquitto_session, influxd_session):
    """Data through the agent: the real meter (10 days) and the scenario (3 days), flow computed."""
    tmp = tmp_path_factory.mktemp("dash")
    db = "dashboards"
    influxd_session.query(f'DROP DATABASE "{db}"', method="POST")
    cfg = write_config(tmp, mosquitto_session.port, influxd_session.url, db, extra=scenario.FLOW_CONFIG,
                       client_id="agent-dashboards")
    agent = Agent(load_config(cfg), clock=lambda: END, components=("edge_agent.flow",))
    agent.start()
    assert agent.ingest.connected.wait(10)
    slots = scenario.simulate(START, DAYS)
    rows = read_csv("data/seed_house/raw_data.csv")
    t0, t1 = int((START - timedelta(days=7)).timestamp() * 1e9), int(END.timestamp() * 1e9)
    sel = (rows.times >= t0) & (rows.times <= t1)
    meter = [(datetime.fromtimestamp(t / 1e9, UTC), float(v)) for t, v in zip(rows.times[sel], rows.values[sel],
                                                                           strict=True)]
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id="pub-dashboards")
    n = pub.publish_all(list(scenario.messages(slots)) + list(counter_messages(meter)))
    pub.close()
    wait_for(lambda: agent.health.get("stored") >= n, timeout=60)
    wait_for(lambda: count(influxd_session, db, "energy_flow", "house") >= DAYS * 96, timeout=60)
    # what the forecaster and the health reporter write (schema in docs/architecture.md)
    agent.report_health()
    st = agent.ctx.storage
    st.write([Point("forecast", {"model": m, "version": "20260101T000000Z", "horizon": h, "name": f"{m}-{h}"},
                    {"value_kwh": 0.3 + 0.01 * k, "issued_at": "2023-07-03T00:00:00Z"},
                    int((START + timedelta(days=2, minutes=15 * (k + 1))).timestamp() * 1e9))
              for m in ("cnn", "lstm") for h in ("1", "96") for k in range(96 if h == "96" else 4)])
    wait_for(lambda: count(influxd_session, db, "agent", "received") > 0, timeout=20)
    snap = agent.health.point("test").fields  # the agent's real counters, as if reported every 15 minutes
    st.write([Point("agent", {"host": "test"}, {**snap, "received": int(snap["received"]) * (k + 1) // 4,
                                                "stored": int(snap["stored"]) * (k + 1) // 4},
                    int((START + timedelta(days=2, minutes=15 * k)).timestamp() * 1e9)) for k in range(4)])
    yield influxd_session, db, slots
    agent.stop()


def test_flow_matches_the_scenario(loaded_db):
    influxd, db, slots = loaded_db
    res = influxd.query('SELECT * FROM "energy_flow"', db=db)["results"][0]["series"][0]
    got = {row[0]: dict(zip(res["columns"], row, strict=True)) for row in res["values"]}
    checked = 0
    for s in slots[1:]:
        row = got.get(int(s["time"].timestamp() * 1e9))
        assert row is not None, s["time"]
        assert row["house"] == pytest.approx(s["house"], abs=1e-5)
        assert row["pv"] == pytest.approx(s["pv"], abs=1e-5)
        assert row["battery_charge"] == pytest.approx(s["charge"], abs=1e-5)
        assert row["pv_to_house"] + row["battery_to_house"] + row["grid_to_house"] == pytest.approx(row["house"])
        assert min(v for k, v in row.items() if isinstance(v, float)) >= 0
        checked += 1
    assert checked == DAYS * 96
    assert any((r["pv_to_grid"] or 0) > 0 for r in got.values())
    assert any((r["battery_to_house"] or 0) > 0 for r in got.values())


def _targets():
    for b in json.loads(json.dumps([json.loads(p.read_text()) for p in
                                    sorted((PROV / "dashboards" / "home-energy").glob("*.json"))])):
        for p in b["panels"]:
            for t in p["targets"]:
                yield pytest.param(b["title"], p["title"], t["query"], id=f"{b['uid']}-{p['id']}-{t['refId']}")


@pytest.mark.parametrize(("board", "panel", "query"), list(_targets()))
def test_every_panel_query_returns_plausible_rows(loaded_db, board, panel, query):
    influxd, db, _ = loaded_db
    q = grafana_macros(query, START - timedelta(days=7), END + timedelta(hours=1))
    res = influxd.query(q, db=db)["results"][0]
    assert "error" not in res, res
    values = [v for s in res.get("series", []) for row in s["values"] for v in row[1:]]
    numbers = np.array([v for v in values if isinstance(v, int | float)], dtype=float)
    assert len(numbers) > 0, f"{board} / {panel}: no rows for {q}"
    assert np.isfinite(numbers).all()
    if re.search(r"self_consumption|autarky", q):
        assert ((numbers >= 0) & (numbers <= 1.0001)).all()
    elif "energy_flow" in q or "forecast" in q:
        assert (numbers >= 0).all() and numbers.max() < 200  # kWh: a few days of a house
    elif '"Power"' in q:
        assert np.abs(numbers).max() < 50_000  # W
