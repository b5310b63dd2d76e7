"""The house's energy flow per 15-minute slot (pure maths, numpy arrays of kWh per slot, NaN = unknown).

Sign conventions (all flows are non-negative kWh):
- grid_import / grid_export: energy bought from / sold to the grid (the grid meter's two counters);
- pv: energy the PV inverters produced; battery_charge / battery_discharge: energy into / out of the battery;
- house = grid_import − grid_export + pv + battery_discharge − battery_charge (the balance: everything that
  came in and did not go out was consumed in the house).

Allocation, PV first to the house, then to the battery, the rest to the grid; the battery serves the house
before the grid does:
    pv_to_house      = min(pv, house)
    pv_to_battery    = min(pv − pv_to_house, battery_charge)
    pv_to_grid       = pv − pv_to_house − pv_to_battery
    grid_to_battery  = battery_charge − pv_to_battery
    battery_to_house = min(battery_discharge, house − pv_to_house)
    grid_to_house    = house − pv_to_house − battery_to_house
    self_consumption = (pv_to_house + pv_to_battery) / pv          (when pv > 0)
    autarky          = (house − grid_to_house) / house             (when house > 0)

A negative balance (meters out of step, e.g. different sampling) is never turned into negative consumption:
house is clamped to 0 and the slot flagged `imbalance`. Missing roles are flagged `missing_<role>`; without the
grid meter the house consumption is unknown and left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROLES = ("grid", "pv", "battery")
TOLERANCE_KWH = 0.01


@dataclass
class RoleEnergy:
    """kWh per slot for the roles present (arrays of equal length; None = no such device configured)."""

    grid_import: np.ndarray
    grid_export: np.ndarray | None = None
    pv: np.ndarray | None = None
    battery_charge: np.ndarray | None = None
    battery_discharge: np.ndarray | None = None


def _z(a: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n) if a is None else a


def compute(e: RoleEnergy) -> tuple[dict[str, np.ndarray], list[str]]:
    """Flow fields per slot (NaN where unknown) and a flags string per slot."""
    n = len(e.grid_import)
    imp, exp = e.grid_import, _z(e.grid_export, n)
    pv, chg, dis = _z(e.pv, n), _z(e.battery_charge, n), _z(e.battery_discharge, n)
    flags = [[] for _ in range(n)]
    for name, arr in (("grid", imp), ("grid_export", exp), ("pv", pv), ("battery", chg), ("battery", dis)):
        for i in np.where(np.isnan(arr))[0]:
            tag = f"missing_{name.split('_')[0]}"
            if tag not in flags[i]:
                flags[i].append(tag)
    with np.errstate(invalid="ignore", divide="ignore"):
        balance = imp - exp + pv + dis - chg
        for i in np.where(balance < -TOLERANCE_KWH)[0]:
            flags[i].append("imbalance")
        house = np.maximum(balance, 0.0)
        pv_to_house = np.minimum(pv, house)
        pv_to_battery = np.minimum(pv - pv_to_house, chg)
        pv_to_grid = np.maximum(pv - pv_to_house - pv_to_battery, 0.0)
        grid_to_battery = np.maximum(chg - pv_to_battery, 0.0)
        battery_to_house = np.minimum(dis, house - pv_to_house)
        grid_to_house = np.maximum(house - pv_to_house - battery_to_house, 0.0)
        self_consumption = np.where(pv > 0, (pv_to_house + pv_to_battery) / pv, np.nan)
        autarky = np.where(house > 0, (house - grid_to_house) / house, np.nan)
    fields = {
        "grid_import": imp, "grid_export": exp, "pv": pv, "battery_charge": chg, "battery_discharge": dis,
        "house": house, "pv_to_house": pv_to_house, "pv_to_battery": pv_to_battery, "pv_to_grid": pv_to_grid,
        "grid_to_house": grid_to_house, "grid_to_battery": grid_to_battery, "battery_to_house": battery_to_house,
        "self_consumption": self_consumption, "autarky": autarky,
    }
    if e.grid_export is None:
        fields.pop("grid_export")
    if e.pv is None:
        for k in ("pv", "pv_to_house", "pv_to_battery", "pv_to_grid", "self_consumption"):
            fields.pop(k)
    if e.battery_charge is None and e.battery_discharge is None:
        for k in ("battery_charge", "battery_discharge", "pv_to_battery", "grid_to_battery", "battery_to_house"):
            fields.pop(k, None)
    return fields, [",".join(f) for f in flags]
