"""A deterministic house with solar: PV + battery + grid meter, 15-minute steps, in the seed's message format.

- House consumption: the real seed house's slots for the same period (data/seed_house), 0.3 kWh where unknown.
- PV (device `pv-roof`, PvString): 6 kWp, clear-sky bell between 05:00 and 19:00 UTC peaking at 12:00,
  times a fixed cloudiness per day (0.35 … 1.0, cycling through 7 values).
- Battery (`battery-1`, Battery): 10 kWh, 3 kW; charges from PV surplus, discharges to cover the house while the
  state of charge is above 10 %.
- Grid meter (`house-grid`, EnergyMeter): import = house − PV − discharge + charge when positive, export otherwise.
Every device publishes cumulative counters (kWh) and its mean power (W) at each slot end.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np

from shared.series import counter_to_slots, read_csv
from tools.publish import seed_message

CLOUDS = (1.0, 0.8, 0.35, 0.9, 0.6, 1.0, 0.5)
PV_PEAK_KW = 6.0
BATTERY_KWH, BATTERY_KW = 10.0, 3.0


def pv_kwh(t_end: datetime) -> float:
    """PV energy in the slot ending at t_end."""
    mid = t_end - timedelta(minutes=7.5)
    hour = mid.hour + mid.minute / 60
    if not 5 <= hour <= 19:
        return 0.0
    shape = math.sin(math.pi * (hour - 5) / 14) ** 2
    return PV_PEAK_KW * shape * CLOUDS[mid.toordinal() % 7] * 0.25


def simulate(start: datetime, days: int, csv_path: str = "data/seed_house/raw_data.csv") -> list[dict]:
    """One dict per slot end with each flow in kWh and the counters."""
    series = counter_to_slots(read_csv(csv_path))
    slots, soc = [], 5.0
    counters = {"imp": 1000.0, "exp": 200.0, "pv": 5000.0, "chg": 300.0, "dis": 280.0}
    for k in range(days * 96 + 1):
        t = start + timedelta(minutes=15 * k)
        i = series.index_of(int(t.timestamp()) * 10**9)
        house = float(series.values[i]) if 0 <= i < len(series.values) and np.isfinite(series.values[i]) else 0.3
        pv = pv_kwh(t)
        surplus = pv - house
        charge = min(max(surplus, 0.0), BATTERY_KW * 0.25, BATTERY_KWH - soc)
        discharge = min(max(-surplus, 0.0), BATTERY_KW * 0.25, max(soc - 0.1 * BATTERY_KWH, 0.0))
        soc += charge - discharge
        net = house - pv - discharge + charge
        imp, exp = max(net, 0.0), max(-net, 0.0)
        if k > 0:  # the first row only sets the counters' starting point
            counters["imp"] += imp
            counters["exp"] += exp
            counters["pv"] += pv
            counters["chg"] += charge
            counters["dis"] += discharge
        slots.append({"time": t, "house": house, "pv": pv, "charge": charge, "discharge": discharge,
                      "import": imp, "export": exp, "soc": soc, **{f"c_{n}": v for n, v in counters.items()}})
    return slots


def messages(slots: list[dict]) -> Iterator[tuple[str, bytes]]:
    for s in slots:
        t = s["time"]
        yield seed_message("house-grid", "meter", "EnergyMeter", t,
                           {"EnergyIn": round(s["c_imp"], 6), "EnergyOut": round(s["c_exp"], 6),
                            "Power": round((s["import"] - s["export"]) * 4000, 1)}, "Grid connection", "grid_meter")
        yield seed_message("pv-roof", "string1", "PvString", t,
                           {"EnergyOut": round(s["c_pv"], 6), "Power": round(s["pv"] * 4000, 1)}, "Roof PV",
                           "pv_inverter")
        yield seed_message("battery-1", "state", "Battery", t,
                           {"EnergyIn": round(s["c_chg"], 6), "EnergyOut": round(s["c_dis"], 6),
                            "Power": round((s["charge"] - s["discharge"]) * 4000, 1), "Soc": round(s["soc"] * 10, 2)},
                           "Home battery", "battery")


FLOW_CONFIG = """
[flow]
delay_s = 0
lookback_slots = 8
late_debounce_s = 0.5

[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = { device_id = "house-grid" }
import_field = "EnergyIn"
export_field = "EnergyOut"

[[flow.devices]]
role = "pv"
measurement = "PvString"
tags = { device_id = "pv-roof" }
import_field = "EnergyOut"

[[flow.devices]]
role = "battery"
measurement = "Battery"
tags = { device_id = "battery-1" }
import_field = "EnergyIn"
export_field = "EnergyOut"
"""
