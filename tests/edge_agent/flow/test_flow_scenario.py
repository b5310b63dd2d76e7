"""Issue 18's hand-designed house, through MQTT, the real agent and influxd, on a stepped clock.

A grid meter, a PV inverter and a battery report their counters every minute at their own unaligned seconds
(:07, :23, :41), never on a slot end. Energy accrues in the middle 13 minutes of each slot, so that a counter's
value at a slot end, interpolated between the readings around it, is exact and every figure below can be worked
out by hand. 14 slots: grid-charging at a cheap night tariff, night discharge, morning PV, PV charging the battery,
PV surplus exported, import and export in one slot, evening discharge, charge and discharge in one slot, a grid
meter replaced mid-slot, late PV readings (the slot before them must be redone too), a battery that stopped
reporting across a boundary (interpolation would invent a split that makes the next slot impossible: both are
left unknown), and a quiet grid-only slot.

Each slot must be written at its boundary + delay (the first release wrote none: it never read the reading after
the boundary), with every field equal to the hand table.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config
from tests.helpers.agent import wait_for, write_config
from tests.helpers.forecast import Clock
from tools.publish import Publisher, seed_message

T0 = datetime(2024, 3, 1, tzinfo=UTC)
FLOW = """
[flow]
delay_s = 30
lookback_slots = 8
late_debounce_s = 0.3
gap_s = 300
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = { device_id = "grid" }
import_field = "EnergyIn"
export_field = "EnergyOut"
[[flow.devices]]
role = "pv"
measurement = "PvString"
tags = { device_id = "pv" }
import_field = "EnergyOut"
[[flow.devices]]
role = "battery"
measurement = "Battery"
tags = { device_id = "bat" }
import_field = "EnergyIn"
export_field = "EnergyOut"
"""

# What happens in slot k (ending at T0 + 15k min), kWh: grid import, grid export, PV, charge, discharge.
SLOTS = {
    1: (1.0, 0.0, 0.0, 0.8, 0.0),     # night tariff: the grid charges the battery, the house uses 0.2
    2: (0.05, 0.0, 0.0, 0.0, 0.25),   # night: the battery (grid energy) serves the house
    3: (0.1, 0.0, 0.3, 0.0, 0.0),     # morning PV
    4: (0.0, 0.0, 1.2, 0.9, 0.0),     # PV charges the battery
    5: (0.0, 0.7, 1.5, 0.5, 0.0),     # PV surplus: battery and export
    6: (0.1, 0.2, 0.6, 0.0, 0.0),     # import and export in one slot
    7: (0.05, 0.0, 0.0, 0.0, 0.4),    # evening discharge (72 % PV energy by then)
    8: (0.15, 0.0, 0.2, 0.15, 0.1),   # charge and discharge in one slot
    9: (0.3, 0.0, 0.0, 0.0, 0.0),     # the grid meter is replaced 7 minutes before the end
    10: (0.1, 0.0, 0.25, 0.0, 0.0),   # PV readings after this slot's end arrive late …
    11: (0.0, 0.1, 0.5, 0.0, 0.0),   # … until 3 minutes into slot 12
    12: (0.0, 0.0, 1.0, 0.75, 0.0),  # the battery stops reporting 12 min before this slot's end …
    13: (0.0, 0.0, 0.3, 0.05, 0.0),   # … until 12 min after it
    14: (0.3, 0.0, 0.0, 0.0, 0.0),
}
REPLACED_AT = 9 * 900 - 7 * 60  # seconds after T0: the new grid meter starts at 0
PV_LATE = (10 * 900, 11 * 900 + 180)  # PV readings in (a, b] are published only after slot 11 was computed
BAT_SILENT = (12 * 900 - 720, 12 * 900 + 720)  # no battery readings in (a, b]

# The hand table: every energy_flow field of every slot (kWh; ratios 0-1). Battery origin: the battery starts
# empty (unknown origin counts as grid); slot 1 fills it with 0.8 grid energy; slot 4 adds 0.9 PV to 0.55 left
# (PV share 0.9 / 1.45 = 0.620690), slot 5 adds 0.5 (1.4 / 1.95 = 0.717949); discharging keeps the share;
# slot 8 takes 0.1 out and puts 0.15 grid in: 1.041026 / 1.6 = 0.650641.
E = {
    1: dict(grid_import=1.0, grid_export=0.0, pv=0.0, battery_charge=0.8, battery_discharge=0.0, house=0.2,
            pv_to_house=0.0, pv_to_battery=0.0, pv_to_grid=0.0, grid_to_house=0.2, grid_to_battery=0.8,
            battery_to_house=0.0, battery_to_grid=0.0, battery_cycled=0.0, export_unexplained=0.0,
            battery_to_house_pv=0.0, battery_to_house_grid=0.0, self_supplied=0.0, autarky=0.0,
            battery_content_kwh=0.8, battery_pv_share=0.0, flags=""),
    2: dict(grid_import=0.05, pv=0.0, battery_discharge=0.25, house=0.3, grid_to_house=0.05, battery_to_house=0.25,
            battery_to_house_pv=0.0, battery_to_house_grid=0.25, self_supplied=0.0, autarky=0.0,
            battery_content_kwh=0.55, battery_pv_share=0.0, flags=""),
    3: dict(grid_import=0.1, pv=0.3, house=0.4, pv_to_house=0.3, grid_to_house=0.1, self_supplied=0.3,
            autarky=0.75, self_consumption=1.0, battery_content_kwh=0.55, flags=""),
    4: dict(pv=1.2, battery_charge=0.9, house=0.3, pv_to_house=0.3, pv_to_battery=0.9, pv_to_grid=0.0,
            grid_to_battery=0.0, autarky=1.0, self_consumption=1.0, battery_content_kwh=1.45,
            battery_pv_share=0.620690, flags=""),
    5: dict(grid_export=0.7, pv=1.5, battery_charge=0.5, house=0.3, pv_to_grid=0.7, pv_to_house=0.3,
            pv_to_battery=0.5, self_consumption=0.533333, autarky=1.0, battery_content_kwh=1.95,
            battery_pv_share=0.717949, flags=""),
    6: dict(grid_import=0.1, grid_export=0.2, pv=0.6, house=0.5, pv_to_grid=0.2, pv_to_house=0.4,
            grid_to_house=0.1, grid_to_battery=0.0, self_consumption=0.666667, autarky=0.8, flags=""),
    7: dict(grid_import=0.05, battery_discharge=0.4, house=0.45, battery_to_house=0.4, grid_to_house=0.05,
            battery_to_house_pv=0.287179, battery_to_house_grid=0.112821, self_supplied=0.287179,
            autarky=0.638177, battery_content_kwh=1.55, battery_pv_share=0.717949, flags=""),
    8: dict(grid_import=0.15, pv=0.2, battery_charge=0.15, battery_discharge=0.1, house=0.3, pv_to_house=0.2,
            battery_to_house=0.1, grid_to_house=0.0, pv_to_battery=0.0, grid_to_battery=0.15, battery_cycled=0.0,
            battery_to_house_pv=0.071795, battery_to_house_grid=0.028205, self_supplied=0.271795,
            autarky=0.905983, self_consumption=1.0, battery_content_kwh=1.6, battery_pv_share=0.650641,
            flags=""),
    9: dict(pv=0.0, battery_charge=0.0, battery_discharge=0.0, house=None, flags="missing_grid"),
    10: dict(grid_import=0.1, pv=0.25, house=0.35, pv_to_house=0.25, grid_to_house=0.1, autarky=0.714286,
             self_consumption=1.0, flags=""),
    11: dict(grid_export=0.1, pv=0.5, house=0.4, pv_to_grid=0.1, pv_to_house=0.4, autarky=1.0,
             self_consumption=0.8, flags=""),
    12: dict(pv=1.0, battery_charge=None, house=None, flags="missing_battery,interpolated"),
    13: dict(pv=0.3, battery_charge=None, house=None, flags="missing_battery,interpolated"),
    14: dict(grid_import=0.3, house=0.3, grid_to_house=0.3, battery_charge=0.0, autarky=0.0,
             battery_content_kwh=1.6, battery_pv_share=0.650641, flags=""),
}


def accrued(t: float, k_field: int) -> float:
    """Energy since T0 at t seconds after T0: each slot's energy accrues linearly between 1 min after its start
    and 1 min before its end."""
    total = 0.0
    for k, e in SLOTS.items():
        start, end = (k - 1) * 900 + 60, k * 900 - 60
        total += e[k_field] * min(max((t - start) / (end - start), 0.0), 1.0)
    return total


def counter(t: float, k_field: int, replace: bool = False) -> float:
    """A device's counter (it read 100 kWh at T0); the replaced grid meter counts from 0 again."""
    if replace and t > REPLACED_AT:
        return round(accrued(t, k_field) - accrued(REPLACED_AT, k_field), 6)
    return round(100.0 + accrued(t, k_field), 6)


def readings(a: float, b: float):
    """Every device's messages with device time in (a, b] seconds after T0, and the PV ones held back."""
    out, late = [], []
    for phase, device, feature, fields in ((7, "grid", "EnergyMeter", {"EnergyIn": 0, "EnergyOut": 1}),
                                           (23, "pv", "PvString", {"EnergyOut": 2}),
                                           (41, "bat", "Battery", {"EnergyIn": 3, "EnergyOut": 4})):
        t = phase - 600
        while t <= b:
            if t > a:
                values = {name: counter(t, k, replace=device == "grid") for name, k in fields.items()}
                msg = seed_message(device, "c", feature, T0 + timedelta(seconds=t), values)
                if device == "pv" and PV_LATE[0] < t <= PV_LATE[1]:
                    late.append(msg)
                elif not (device == "bat" and BAT_SILENT[0] < t <= BAT_SILENT[1]):
                    out.append(msg)
            t += 60
    return out, late


def slot_row(influxd, db, k: int) -> dict | None:
    t = int((T0 + timedelta(minutes=15 * k)).timestamp() * 1e9)
    res = influxd.query(f'SELECT * FROM "energy_flow" WHERE time = {t}', db=db)["results"][0]
    if "series" not in res:
        return None
    s = res["series"][0]
    return dict(zip(s["columns"], s["values"][0], strict=True))


def settled(influxd, db: str, k: int, timeout: float = 15.0) -> None:
    """Slot k equals the hand table within `timeout` s of real time after its boundary passed. (Under the full
    suite's load a first, incomplete row was seen twice — slot 3 without autarky, slot 13 without PV — and then
    corrected; not reproduced alone or under CPU load: the figures must be right at the boundary, give or take
    one recomputation.)"""
    deadline = time.monotonic() + timeout
    while True:
        row = slot_row(influxd, db, k)
        try:
            check(row or {}, k)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def check(row: dict, k: int) -> None:
    for field, want in E[k].items():
        got = row.get(field)
        if want is None or field == "flags":
            assert got == want, f"slot {k} {field}: {got!r}, hand table {want!r}"
        else:
            assert got == pytest.approx(want, abs=2e-6), f"slot {k} {field}: {got!r}, hand table {want!r}"


@pytest.mark.timeout(300)
def test_hand_designed_house_slot_by_slot(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, extra=FLOW,
                       client_id=f"agent-{influx_db_name}")
    clock = Clock(T0)
    agent = Agent(load_config(cfg), clock=clock, components=("flow",))
    agent.start()
    assert agent.ingest.connected.wait(10)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    held: list = []
    try:
        sent = 0
        for k in range(0, 15):
            msgs, late = readings((k - 1) * 900 + 60 if k else -10_000, k * 900 + 60)
            held += late
            sent += pub.publish_all(msgs)
            wait_for(lambda n=sent: agent.health.get("received") >= n, timeout=20)
            wait_for(lambda: agent.ingest.spool.pending_points == 0, timeout=20)
            clock.set(T0 + timedelta(seconds=k * 900 + 31))  # the boundary + delay passes
            if k == 0:
                continue
            # written at its boundary (within a few seconds of real time), not one boundary later
            wait_for(lambda k=k: slot_row(influxd_session, influx_db_name, k), timeout=15)
            if k == 11:  # the late PV readings arrive now: slots 10 and 11 (both!) are redone exactly
                assert "missing_pv" in slot_row(influxd_session, influx_db_name, 10)["flags"]
                pub.publish_all(held)
                wait_for(lambda: (r := slot_row(influxd_session, influx_db_name, 10)) and r["flags"] == "",
                         timeout=15)
                wait_for(lambda: (r := slot_row(influxd_session, influx_db_name, 11)) and r["flags"] == "",
                         timeout=15)
            if k not in (10, 12):  # 10 waits for its late readings; 12 is decided with slot 13
                settled(influxd_session, influx_db_name, k)
        for k in range(1, 15):
            check(slot_row(influxd_session, influx_db_name, k), k)
        assert agent.health.get("flow_errors") == 0
    finally:
        pub.close()
        agent.stop()
