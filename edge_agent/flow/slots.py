"""Between reading the meters and writing `energy_flow`, without I/O: which counter values bridged a missing reading
and may be used, what a slot costs, and what is written per slot. edge_agent/flow/component.py reads the devices'
slots and writes the points; edge_agent/flow/maths.py allocates the flows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.points import Point
from shared.schema import ENERGY_FLOW, FLAGS_FIELD, ROLE_FIELDS

BALANCE_TOLERANCE_KWH = 0.01  # a slot's balance above −this is possible (meters are not exact)


@dataclass
class RoleSlots:
    """One role's kWh per slot: (import-like, export-like or None) and the interpolation spans (s) at the
    n + 1 boundaries of the n slots."""

    a: np.ndarray
    b: np.ndarray | None
    spans: np.ndarray


def wide_boundaries(roles: dict[str, RoleSlots | None], gap_s: float) -> np.ndarray:
    """Per boundary (n + 1 of them): a value there bridged more than gap_s without a reading."""
    wide = np.zeros(len(roles["grid"].spans), bool)  # the config requires a grid meter
    for r in roles.values():
        if r is not None:
            wide |= np.nan_to_num(r.spans, nan=0.0) > gap_s
    return wide


def blank_invented(roles: dict[str, RoleSlots | None], gap_s: float, newest: bool) -> set[int]:
    """A value interpolated across a missing reading (a boundary bridged by more than gap_s) is used only where
    both slots sharing the boundary are known and possible (a balance ≥ −0.01 kWh): where either is
    impossible, unknown (a reading missing, or not yet there) or not computed yet (`newest`: the last slot is
    the newest that ended), that role is left unknown in both instead of an invented split (issue 18: a
    0.75/0.05 charge came out 0.40/0.40; issue 25: the slot before the missing reading, computed before the
    slot after it existed, kept its split). Blanks `roles` in place; returns the indices of the slots it blanked."""
    grid, pv, bat = roles["grid"], roles["pv"], roles["battery"]
    n = len(grid.a)
    z = np.zeros(n)
    with np.errstate(invalid="ignore"):
        balance = (grid.a - (grid.b if grid.b is not None else z) + (pv.a if pv else z)
                   + (bat.b if bat and bat.b is not None else z) - (bat.a if bat else z))
    judged = np.nan_to_num(balance, nan=-np.inf) >= -BALANCE_TOLERANCE_KWH  # known and possible
    blanked: set[int] = set()
    for role in roles.values():
        if role is None:
            continue
        wide = np.where(np.nan_to_num(role.spans, nan=0.0) > gap_s)[0]
        for j in wide:  # boundary j is the end of slot j - 1 and the start of slot j
            if j == 0 or (j == n and not newest):
                continue  # the neighbour lies outside the computed range (compute_range includes both)
            pair = [k for k in (j - 1, j) if k < n]
            if j == n or not all(judged[k] for k in pair):
                for k in pair:
                    role.a[k] = np.nan
                    if role.b is not None:
                        role.b[k] = np.nan
                blanked.update(pair)
    return blanked


def add_cost(fields: dict[str, np.ndarray], flags: list[str], price: np.ndarray, feed_in: float) -> set[int]:
    """cost = grid_import × the slot's price − grid_export × the feed-in price, with the prices beside it, into
    `fields`; a slot whose price is not known yet is flagged `missing_price` (returned: the flow is woken when
    prices arrive, readings do not complete it)."""
    n = len(price)
    imp = fields["grid_import"]
    exp = fields.get("grid_export", np.zeros(n))
    fields["import_price"] = price
    fields["feed_in_price"] = np.full(n, float(feed_in))
    fields["cost"] = imp * price - exp * feed_in
    waiting = set()
    for i in np.where(np.isfinite(imp) & ~np.isfinite(price))[0]:
        flags[i] = ",".join(filter(None, [flags[i], "missing_price"]))
        waiting.add(int(i))
    return waiting


def slot_points(ends: np.ndarray, first: int, last: int, fields: dict[str, np.ndarray], flags: list[str],
                interpolated: np.ndarray) -> tuple[list[Point], set[int], dict[int, dict]]:
    """The `energy_flow` points of the slots first … last (indices into `ends`), the slot ends still missing a
    reading (`missing_<role>`: retried), and per slot end the values counted into the running totals ({}: no
    device data at all, nothing written)."""
    points, incomplete, counted = [], set(), {}
    for i in range(first, last + 1):
        t = int(ends[i])
        flag = flags[i]
        if interpolated[i]:
            flag = ",".join(filter(None, [flag, "interpolated"]))
        if "missing" in flag:
            incomplete.add(t)
        values = {k: float(v[i]) for k, v in fields.items() if np.isfinite(v[i])}
        if not any(k in values for k in ROLE_FIELDS):
            counted[t] = {}
            continue  # no device data at all (before the first reading): nothing to write
        counted[t] = values
        # always written: a rewrite of the slot must clear flags of an earlier, incomplete computation
        # (InfluxDB merges the fields of points with the same series and time)
        values[FLAGS_FIELD] = flag
        points.append(Point(ENERGY_FLOW, {}, values, t))
    return points, incomplete, counted
