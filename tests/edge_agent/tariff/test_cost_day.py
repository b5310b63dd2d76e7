"""A hand-computed day and a half of costs, through Mosquitto, the real agent and influxd.

A grid meter (import and export counters) and a PV inverter report on every slot boundary from 12 March 2024 00:00
to 13 March 12:00 (Europe/Berlin). Hourly dynamic prices arrive as Home Assistant's Nord Pool integration holds them
(EUR/MWh with local offsets, converted with prices_scale and prices_add), with a price spike at 18:00; feed-in is
flat. Every slot's cost (import × that slot's price − export × feed-in) is worked out here with Decimal, and must be
what the agent stores with the slot, what "cost yesterday" / "cost today" say, and it must survive a restart after
which the price list no longer holds those slots (a late reading recomputes them with the price stored with them).
The forecast cost of the next 24 h is the served day-ahead forecast × the prices known (only today's: so no 24 h
figure, and the part that is priced).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import paho.mqtt.publish
import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config
from tests.helpers.agent import wait_for, write_config
from tests.helpers.forecast import Clock, Retained
from tools.publish import Publisher, seed_message

BERLIN = ZoneInfo("Europe/Berlin")
DAY1 = datetime(2024, 3, 12, tzinfo=BERLIN)
SLOTS = 144  # 12 March 00:15 … 13 March 12:00
FEED_IN = Decimal("0.082")
SCALE, ADD = Decimal("0.001"), Decimal("0.12")


def raw_price(hour: int) -> Decimal:
    """EUR/MWh for the hour starting `hour` hours after DAY1 (48 hours)."""
    return Decimal(450) if hour == 18 else Decimal(60 + 5 * (hour % 24))


def energy(k: int) -> tuple[Decimal, Decimal, Decimal]:
    """Import, export, PV (kWh) of slot k (1-based; it starts (k − 1) × 15 min after DAY1)."""
    h = ((k - 1) // 4) % 24
    pv = Decimal("0.2") + Decimal("0.01") * (k % 5) if 8 <= h < 17 else Decimal(0)
    exp = Decimal("0.1") + Decimal("0.003") * (k % 3) if 10 <= h < 15 else Decimal(0)
    imp = Decimal("0.05") + Decimal("0.002") * (k % 11) if not 10 <= h < 15 else Decimal(0)
    if h == 10:
        imp = Decimal("0.01")  # import and export in one slot
    return imp, exp, pv


def price(k: int) -> Decimal:
    return raw_price((k - 1) // 4) * SCALE + ADD


def cost(k: int) -> Decimal:
    imp, exp, _ = energy(k)
    return imp * price(k) - exp * FEED_IN


def ns(t: datetime) -> int:
    return int(t.timestamp()) * 10**9


def slot_end(k: int) -> datetime:
    return DAY1 + timedelta(minutes=15 * k)


def nordpool(hours: range) -> str:
    """As the Nord Pool integration's raw_today/raw_tomorrow attributes hold them (local times with offsets)."""
    entries = [{"start": (DAY1 + timedelta(hours=h)).isoformat(), "end": (DAY1 + timedelta(hours=h + 1)).isoformat(),
                "value": float(raw_price(h))} for h in hours]
    return json.dumps({"raw_today": entries[:24], "raw_tomorrow": entries[24:]})


def readings() -> list[tuple[str, bytes]]:
    msgs = []
    imp, exp, pv = Decimal(1000), Decimal(500), Decimal(200)
    for k in range(SLOTS + 1):
        if k:
            e = energy(k)
            imp, exp, pv = imp + e[0], exp + e[1], pv + e[2]
        t = DAY1 + timedelta(minutes=15 * k)
        msgs.append(seed_message("grid", "c", "EnergyMeter", t, {"EnergyIn": float(imp), "EnergyOut": float(exp)}))
        msgs.append(seed_message("pv", "c", "PvString", t, {"EnergyOut": float(pv)}))
    return msgs


def config(tmp_path, port, url, db, prefix) -> str:
    return write_config(tmp_path, port, url, db, client_id=f"agent-{db}", extra=f"""
[publish]
topic_prefix = "{prefix}"
node_id = "costnode"
[tariff]
currency = "EUR"
feed_in = {FEED_IN}
timezone = "Europe/Berlin"
prices_topic = "{prefix}/prices"
prices_scale = {SCALE}
prices_add = {ADD}
[flow]
delay_s = 30
late_debounce_s = 0.3
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = {{ device_id = "grid" }}
import_field = "EnergyIn"
export_field = "EnergyOut"
[[flow.devices]]
role = "pv"
measurement = "PvString"
tags = {{ device_id = "pv" }}
import_field = "EnergyOut"
[forecast]
measurement = "EnergyMeter"
field = "EnergyIn"
tags = {{ device_id = "grid" }}
timezone = "Europe/Berlin"
away = false
""")


def flow_costs(influxd, db) -> dict[int, tuple[float, float]]:
    res = influxd.query('SELECT "cost", "import_price" FROM "energy_flow"', db=db)["results"][0]
    return {t: (c, p) for t, c, p in res["series"][0]["values"]} if "series" in res else {}


@pytest.mark.timeout(240)
def test_a_hand_computed_day_of_costs(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    db, port = influx_db_name, mosquitto_session.port
    prefix = f"cost-{db[-12:]}"
    cfg = load_config(config(tmp_path, port, influxd_session.url, db, prefix))
    now = slot_end(SLOTS) + timedelta(seconds=40)  # 13 March 12:00:40: the slot ending at 12:00 is due
    clock = Clock(now)
    paho.mqtt.publish.single(f"{prefix}/prices", nordpool(range(48)), qos=1, retain=True, port=port)
    ha = Retained(port, f"{prefix}/#")
    agent = Agent(cfg, clock=clock, components=("tariff", "flow", "forecast"))
    agent.start()
    pub = Publisher("127.0.0.1", port, client_id=f"pub-{db}")
    try:
        assert agent.ingest.connected.wait(10)
        tariff = agent.components["tariff"]
        wait_for(lambda: len(tariff._dynamic) == 192, timeout=10)  # 48 hours of 4 slots
        pub.publish_all(readings())
        want = {ns(slot_end(k)): (cost(k), price(k)) for k in range(1, SLOTS + 1)}
        got = wait_for(lambda: len(r := flow_costs(influxd_session, db)) == SLOTS and all(
            c is not None for c, _ in r.values()) and r, timeout=60)
        for t, (c, p) in want.items():  # every slot, exact
            assert got[t][0] == pytest.approx(float(c), abs=1e-9) and got[t][1] == pytest.approx(float(p), abs=1e-12)
        day1 = sum(cost(k) for k in range(1, 97))
        day2 = sum(cost(k) for k in range(97, SLOTS + 1))
        # the day's sum in the database (what Grafana and the server's homeowner view add up) …
        res = influxd_session.query(f'SELECT sum("cost") FROM "energy_flow" WHERE time > {ns(DAY1)} AND '
                                    f'time <= {ns(DAY1 + timedelta(days=1))}', db=db)["results"][0]
        assert res["series"][0]["values"][0][1] == pytest.approx(float(day1), abs=1e-9)
        # … and Home Assistant's "cost yesterday" / "cost today" (retained on <prefix>/cost after each slot)
        doc = wait_for(lambda: (d := ha.messages.get(f"{prefix}/cost")) and d.get("yesterday_slots") == 96 and d)
        assert doc["yesterday"] == round(float(day1), 4) and doc["today"] == round(float(day2), 4)
        assert (doc["today_slots"], doc["day"], doc["currency"]) == (48, "2024-03-13", "EUR")
        assert doc["last_reset"] == "2024-03-12T23:00:00Z"  # local midnight
        assert doc["price_now"] == pytest.approx(float(price(SLOTS + 1)))  # 12:00-12:15
        # the spike: 18:00-19:00 on the first day priced at 0.57 EUR/kWh, the hours around it not
        assert float(price(73)) == 0.57 and float(price(72)) != 0.57

        # the forecast: the served day-ahead forecast × the known prices (only today's, to 24:00: 48 of 96 slots)
        fc = agent.components["forecast"]
        results = fc.run_once(ns(slot_end(SLOTS)))
        best = fc.best(results, 96)
        assert best is not None and best.model == "baseline"
        fdoc = wait_for(lambda: ha.messages.get(f"{prefix}/cost/forecast"))
        priced = sum(Decimal(repr(float(best.values[j]))) * price(SLOTS + 1 + j) for j in range(48))
        assert fdoc["cost_next_24h"] is None and fdoc["priced_slots"] == 48
        assert fdoc["priced_until"] == "2024-03-13T23:00:00Z" and fdoc["cost_priced_slots"] == round(float(priced), 4)
        res = influxd_session.query('SELECT "value_kwh", "cost" FROM "forecast" WHERE "horizon" = \'96\' AND '
                                    "\"issue\" = 'rolling'", db=db)["results"][0]
        rows = res["series"][0]["values"]
        assert sum(1 for r in rows if r[2] is not None) == 48
        for j, (_t, v, c) in enumerate(rows[:48]):
            assert c == pytest.approx(v * float(price(SLOTS + 1 + j)), abs=1e-12)
    finally:
        pub.close()
        agent.stop()

    # a restart after which the price list holds only tomorrow: a late reading of the first day recomputes its
    # slots with the prices stored with them, and nothing changes
    paho.mqtt.publish.single(f"{prefix}/prices", nordpool(range(48, 72)), qos=1, retain=True, port=port)
    agent = Agent(load_config(config(tmp_path, port, influxd_session.url, db, prefix)), clock=clock,
                  components=("tariff", "flow"))
    agent.start()
    pub = Publisher("127.0.0.1", port, client_id=f"pub2-{db}")
    try:
        assert agent.ingest.connected.wait(10)
        wait_for(lambda: agent.components["tariff"]._dynamic, timeout=10)
        wait_for(lambda: agent.health.get("flow_slots_written") >= 8, timeout=10)  # the look-back, at start
        written = agent.health.get("flow_slots_written")
        late = slot_end(40) - timedelta(minutes=5)  # 09:55 on the first day, between two readings
        counter = Decimal(1000) + sum(energy(k)[0] for k in range(1, 40)) + energy(40)[0] * 2 / 3
        pub.publish_all([seed_message("grid", "c", "EnergyMeter", late, {"EnergyIn": float(counter)})])
        wait_for(lambda: agent.health.get("flow_slots_written") > written, timeout=20)
        got = flow_costs(influxd_session, db)
        for t, (c, _p) in want.items():
            assert got[t][0] == pytest.approx(float(c), abs=1e-9), t
        assert agent.health.get("flow_errors") == 0
    finally:
        pub.close()
        ha.close()
        agent.stop()


def test_slots_computed_before_their_prices_are_priced_when_the_prices_arrive(tmp_path, mosquitto_session,
                                                                             influxd_session, influx_db_name):
    db, port = influx_db_name, mosquitto_session.port
    prefix = f"late-{db[-12:]}"
    paho.mqtt.publish.single(f"{prefix}/prices", "", qos=1, retain=True, port=port)
    agent = Agent(load_config(config(tmp_path, port, influxd_session.url, db, prefix)),
                  clock=Clock(slot_end(SLOTS) + timedelta(seconds=40)), components=("tariff", "flow"))
    agent.start()
    pub = Publisher("127.0.0.1", port, client_id=f"pub-{db}")
    try:
        assert agent.ingest.connected.wait(10)
        pub.publish_all(readings()[-18:])  # the last 8 slots (the look-back) and the boundary before them
        def flags():
            res = influxd_session.query('SELECT "flags" FROM "energy_flow"', db=db)["results"][0]
            return {t: f for t, f in res["series"][0]["values"]} if "series" in res else {}

        assert set(wait_for(lambda: len(f := flags()) == 8 and f, timeout=20).values()) == {"missing_price"}
        assert flow_costs(influxd_session, db) == {}  # no cost and no price in any slot
        paho.mqtt.publish.single(f"{prefix}/prices", nordpool(range(48)), qos=1, retain=True, port=port)
        def priced():
            r = flow_costs(influxd_session, db)
            return len(r) == 8 and all(c is not None for c, _ in r.values()) and r

        rows = wait_for(priced, timeout=20)
        for k in range(SLOTS - 7, SLOTS + 1):
            assert rows[ns(slot_end(k))][0] == pytest.approx(float(cost(k)), abs=1e-9)
        assert set(flags().values()) == {""}
    finally:
        pub.close()
        agent.stop()
        paho.mqtt.publish.single(f"{prefix}/prices", "", qos=1, retain=True, port=port)


def test_a_hostile_price_list_costs_one_message(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    """Deep JSON on the prices topic (RecursionError, not ValueError) was not handled by the listener: it is refused
    and counted, and the next price list on the same connection is taken (issue 23's rule for every thread)."""
    db, port = influx_db_name, mosquitto_session.port
    prefix = f"hostile-{db[-12:]}"
    paho.mqtt.publish.single(f"{prefix}/prices", "[" * 100_000, qos=1, retain=True, port=port)
    agent = Agent(load_config(config(tmp_path, port, influxd_session.url, db, prefix)), clock=Clock(DAY1),
                  components=("tariff",))
    agent.start()
    try:
        wait_for(lambda: agent.health.get("tariff_rejected") == 1, timeout=10)
        paho.mqtt.publish.single(f"{prefix}/prices", nordpool(range(48)), qos=1, retain=True, port=port)
        tariff = agent.components["tariff"]
        wait_for(lambda: len(tariff._dynamic) == 192, timeout=10)
        assert agent.health.get("tariff_rejected") == 1
    finally:
        agent.stop()
        paho.mqtt.publish.single(f"{prefix}/prices", "", qos=1, retain=True, port=port)
