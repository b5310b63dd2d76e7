"""The house's energy flow per 15-minute slot (pure maths, numpy arrays of kWh per slot, NaN = unknown).

What the meters give (all kWh ≥ 0 per slot): grid_import / grid_export (the grid meter's two counters), pv (what
the inverters produced), battery_charge / battery_discharge. The balance gives the house:

    house = grid_import − grid_export + pv + battery_discharge − battery_charge

Allocation. The meters count gross energy: within 15 minutes the grid meter can count import and export, the
battery both charge and discharge. Every flow is non-negative and every source and sink balances:

    pv                = pv_to_house + pv_to_battery + pv_to_grid
    grid_import       = grid_to_house + grid_to_battery                  (+ export_unexplained, see below)
    battery_discharge = battery_to_house + battery_to_grid + battery_cycled
    house             = pv_to_house + battery_to_house + grid_to_house
    grid_export       = pv_to_grid + battery_to_grid                    (+ export_unexplained)
    battery_charge    = pv_to_battery + grid_to_battery + battery_cycled

1. Export comes from PV first, then from the battery (the grid cannot export what it imports). Export that
   neither explains (no PV, no discharge: a missing inverter in the config, or meter phases) is
   `export_unexplained` and flagged: it cancels the same amount of import.
2. The house is served by the remaining PV first, then the battery, then the grid.
3. The battery is charged by the remaining PV first, then the remaining import. Charge that neither explains is
   energy the battery gave and took back within the slot (`battery_cycled`).

Where the battery's energy came from (`track_battery_origin`): the battery's content is tracked with proportional
mixing — a charge adds PV and grid energy in the proportions it came with, a discharge takes both in the
proportions the battery holds. So battery_to_house splits into battery_to_house_pv and battery_to_house_grid, and

    self_supplied    = pv_to_house + battery_to_house_pv      (energy the house got from its own PV)
    autarky          = self_supplied / house                   (when house > 0)
    self_consumption = (pv_to_house + pv_to_battery) / pv      (when pv > 0: the PV energy not exported)

Energy the grid put into the battery at night and the battery gave to the house later is therefore not autarkic
(it was counted as such before: the night's autarky came out 0.598 instead of 0.163 in issue 18's scenario).

A negative balance (meters out of step) is never turned into consumption: house and flows are unknown and the slot
flagged `imbalance`. Missing roles are flagged `missing_<role>` with house unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOLERANCE_KWH = 0.01


@dataclass
class RoleEnergy:
    """kWh per slot for the roles present (arrays of equal length; None = no such device configured)."""

    grid_import: np.ndarray
    grid_export: np.ndarray | None = None
    pv: np.ndarray | None = None
    battery_charge: np.ndarray | None = None
    battery_discharge: np.ndarray | None = None


@dataclass
class BatteryState:
    """The battery's tracked content at a slot end and the share of it that came from PV."""

    content_kwh: float = 0.0
    pv_share: float = 0.0  # unknown origin counts as grid: autarky is never overstated


def _z(a: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n) if a is None else a


def allocate(e: RoleEnergy) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Role energies and flows per slot (NaN where unknown) and the flags of each slot."""
    n = len(e.grid_import)
    imp, exp = e.grid_import, _z(e.grid_export, n)
    pv, chg, dis = _z(e.pv, n), _z(e.battery_charge, n), _z(e.battery_discharge, n)
    flags: list[list[str]] = [[] for _ in range(n)]
    for name, arr in (("grid", imp), ("grid", exp), ("pv", pv), ("battery", chg), ("battery", dis)):
        for i in np.where(np.isnan(arr))[0]:
            if f"missing_{name}" not in flags[i]:
                flags[i].append(f"missing_{name}")
    with np.errstate(invalid="ignore"):
        balance = imp - exp + pv + dis - chg
        imbalanced = balance < -TOLERANCE_KWH
        for i in np.where(imbalanced)[0]:
            flags[i].append("imbalance")
        house = np.where(imbalanced, np.nan, np.maximum(balance, 0.0))
        # 1. export: from PV, then from the battery; what neither explains cancels the same amount of import
        pv_to_grid = np.minimum(pv, exp)
        battery_to_grid = np.minimum(dis, exp - pv_to_grid)
        unexplained = np.maximum(exp - pv_to_grid - battery_to_grid, 0.0)
        for i in np.where((unexplained > TOLERANCE_KWH) & ~imbalanced)[0]:
            flags[i].append("export_unexplained")
        imp_left = np.maximum(imp - unexplained, 0.0)
        pv_left = pv - pv_to_grid
        dis_left = dis - battery_to_grid
        # 2. the house: PV, then the battery, then the grid
        pv_to_house = np.minimum(pv_left, house)
        battery_to_house = np.minimum(dis_left, house - pv_to_house)
        grid_to_house = np.maximum(house - pv_to_house - battery_to_house, 0.0)
        # 3. the battery's charge: PV, then import; the rest went out of the battery and back in
        pv_to_battery = np.minimum(np.maximum(pv_left - pv_to_house, 0.0), chg)
        grid_to_battery = np.minimum(np.maximum(imp_left - grid_to_house, 0.0), chg - pv_to_battery)
        battery_cycled = np.maximum(chg - pv_to_battery - grid_to_battery, 0.0)
        self_consumption = np.where(pv > 0, (pv_to_house + pv_to_battery) / pv, np.nan)
    flows = {"pv_to_house": pv_to_house, "pv_to_battery": pv_to_battery, "pv_to_grid": pv_to_grid,
             "grid_to_house": grid_to_house, "grid_to_battery": grid_to_battery,
             "battery_to_house": battery_to_house, "battery_to_grid": battery_to_grid,
             "battery_cycled": battery_cycled, "export_unexplained": unexplained}
    unknown = np.isnan(house)
    for k, v in flows.items():
        flows[k] = np.where(unknown, np.nan, v)
    fields = {"grid_import": imp, "grid_export": exp, "pv": pv, "battery_charge": chg, "battery_discharge": dis,
              "house": house, **flows, "self_consumption": np.where(unknown, np.nan, self_consumption)}
    return fields, flags


def track_battery_origin(fields: dict[str, np.ndarray], start: BatteryState,
                         capacity_kwh: float | None = None) -> tuple[dict[str, np.ndarray], BatteryState]:
    """Split the battery's outflows by origin, slot by slot from `start` (proportional mixing).

    Returns the new fields (battery_to_house_pv/_grid, battery_content_kwh, battery_pv_share at each slot end)
    and the state after the last slot. Unknown slots leave the state as it was."""
    n = len(fields["house"])
    out = {k: np.full(n, np.nan) for k in ("battery_to_house_pv", "battery_to_house_grid", "battery_content_kwh",
                                          "battery_pv_share")}
    c, s = start.content_kwh, start.pv_share
    for i in range(n):
        b2h, b2g = fields["battery_to_house"][i], fields["battery_to_grid"][i]
        p2b, g2b, cyc = fields["pv_to_battery"][i], fields["grid_to_battery"][i], fields["battery_cycled"][i]
        if not all(np.isfinite(v) for v in (b2h, b2g, p2b, g2b, cyc)):
            out["battery_content_kwh"][i], out["battery_pv_share"][i] = c, s
            continue
        out["battery_to_house_pv"][i] = b2h * s
        out["battery_to_house_grid"][i] = b2h * (1 - s)
        pv_kwh = max(c * s - (b2h + b2g) * s, 0.0) + p2b  # cycled energy keeps its origin: no change
        total = max(c - b2h - b2g, 0.0) + p2b + g2b
        if capacity_kwh and total > capacity_kwh:  # tracked content beyond the capacity: conversion losses
            pv_kwh *= capacity_kwh / total
            total = capacity_kwh
        c = total
        s = min(max(pv_kwh / total, 0.0), 1.0) if total > 1e-9 else s
        out["battery_content_kwh"][i], out["battery_pv_share"][i] = c, s
    return out, BatteryState(c, s)


def compute(e: RoleEnergy, battery: BatteryState | None = None,
            capacity_kwh: float | None = None) -> tuple[dict[str, np.ndarray], list[str], BatteryState]:
    """Every `energy_flow` field per slot (NaN where unknown), the flags string per slot, the battery's state."""
    fields, flags = allocate(e)
    battery = battery or BatteryState()
    has_battery = e.battery_charge is not None or e.battery_discharge is not None
    if has_battery:
        origin, battery = track_battery_origin(fields, battery, capacity_kwh)
        fields.update(origin)
        b2h_pv = fields["battery_to_house_pv"]
    else:
        b2h_pv = np.zeros(len(fields["house"]))
    with np.errstate(invalid="ignore", divide="ignore"):
        fields["self_supplied"] = fields["pv_to_house"] + b2h_pv
        fields["autarky"] = np.where(fields["house"] > 0, fields["self_supplied"] / fields["house"], np.nan)
    if e.grid_export is None:
        fields.pop("grid_export")
        fields.pop("export_unexplained")
    if e.pv is None:
        for k in ("pv", "pv_to_house", "pv_to_battery", "pv_to_grid", "self_consumption"):
            fields.pop(k)
    if not has_battery:
        for k in ("battery_charge", "battery_discharge", "pv_to_battery", "grid_to_battery", "battery_to_house",
                  "battery_to_grid", "battery_cycled"):
            fields.pop(k, None)
    return fields, [",".join(f) for f in flags], battery
