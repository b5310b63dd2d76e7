"""The flow's judgement between reading and writing (edge_agent/flow/slots.py), without influxd: a bridged boundary
is used only where both slots sharing it are known and possible; the cost and its missing prices; the points and
what is retried. The same rules on influxd, in either order of computation: test_flow_db.py, test_flow_order.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.flow.slots import RoleSlots, add_cost, blank_invented, slot_points, wide_boundaries

NAN = math.nan
GAP_S = 300.0
T = 1_700_000_100 * 10**9


def roles(battery_span_at: int, grid_b: list[float] | None = None) -> dict[str, RoleSlots | None]:
    """Three slots; the battery's counters bridged 1 h at boundary `battery_span_at` (0 … 3)."""
    spans = np.zeros(4)
    spans[battery_span_at] = 3600.0
    grid = RoleSlots(np.array([0.2, 0.1, 0.3]), np.array(grid_b if grid_b else [0.0, 0.0, 0.0]), np.zeros(4))
    battery = RoleSlots(np.array([0.1, 0.05, 0.0]), np.array([0.0, 0.0, 0.1]), spans)
    return {"grid": grid, "pv": None, "battery": battery}


def test_a_bridged_boundary_between_two_possible_slots_is_used():
    r = roles(1)
    assert wide_boundaries(r, GAP_S).tolist() == [False, True, False, False]
    assert blank_invented(r, GAP_S, newest=True) == set()
    assert r["battery"].a.tolist() == [0.1, 0.05, 0.0]


def test_an_impossible_neighbour_blanks_the_role_in_both_slots_only():
    # slot 1: 0.1 import − 0.2 export − 0.05 charge = −0.15 kWh: impossible, so the split at boundary 1 is invented
    r = roles(1, grid_b=[0.0, 0.2, 0.0])
    assert blank_invented(r, GAP_S, newest=True) == {0, 1}
    assert np.isnan(r["battery"].a[:2]).all() and np.isnan(r["battery"].b[:2]).all()
    assert r["battery"].a[2] == 0.0 and r["grid"].a.tolist() == [0.2, 0.1, 0.3]  # other slots and roles kept
    # within the tolerance (−0.01 kWh) a balance is possible
    r = roles(1, grid_b=[0.0, 0.059, 0.0])
    assert blank_invented(r, GAP_S, newest=True) == set()


def test_the_newest_slot_waits_for_the_slot_after_its_bridged_end():
    r = roles(3)  # bridged at the end of the last slot: its neighbour is not computed yet
    assert blank_invented(r, GAP_S, newest=True) == {2} and np.isnan(r["battery"].a[2])
    r = roles(3)  # the slot after exists (compute_range reads it too): nothing to judge here
    assert blank_invented(r, GAP_S, newest=False) == set()
    r = roles(0)  # the start of the first slot: its neighbour lies before the range
    assert blank_invented(r, GAP_S, newest=True) == set()


def test_cost_is_import_at_the_price_minus_export_at_feed_in_and_a_missing_price_waits():
    fields = {"grid_import": np.array([1.0, 2.0, NAN]), "grid_export": np.array([0.5, 0.0, 1.0])}
    flags = ["", "imbalance", ""]
    waiting = add_cost(fields, flags, np.array([0.30, NAN, 0.25]), 0.08)
    assert fields["cost"][0] == pytest.approx(1.0 * 0.30 - 0.5 * 0.08)
    assert np.isnan(fields["cost"][1:]).all() and fields["feed_in_price"].tolist() == [0.08] * 3
    assert waiting == {1} and flags == ["", "imbalance,missing_price", ""]  # slot 2 has no import to price
    no_export = {"grid_import": np.array([2.0])}
    add_cost(no_export, [""], np.array([0.5]), 0.1)
    assert no_export["cost"].tolist() == [1.0]


def test_points_carry_the_flags_and_slots_without_data_are_not_written():
    ends = T + 900 * 10**9 * np.arange(4)
    fields = {"grid_import": np.array([NAN, 0.2, NAN, 0.4]), "house": np.array([NAN, 0.2, NAN, 0.4]),
              "pv": np.array([NAN, NAN, NAN, 0.1])}
    flags = ["missing_grid", "", "missing_grid", "missing_pv"]
    interpolated = np.array([False, True, False, False])
    points, incomplete, counted = slot_points(ends, 1, 3, fields, flags, interpolated)
    assert [p.time_ns for p in points] == [int(ends[1]), int(ends[3])]  # slot 2 has no device data: not written
    assert points[0].fields == {"grid_import": 0.2, "house": 0.2, "flags": "interpolated"}
    assert points[1].fields == {"grid_import": 0.4, "house": 0.4, "pv": 0.1, "flags": "missing_pv"}
    assert incomplete == {int(ends[2]), int(ends[3])}  # retried when their readings arrive
    assert counted == {int(ends[1]): points[0].fields, int(ends[2]): {}, int(ends[3]): points[1].fields}
