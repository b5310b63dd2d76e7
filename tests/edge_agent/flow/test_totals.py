"""The running totals' arithmetic (edge_agent/flow/totals.py): corrections, never decreasing, restarts."""

import json

import pytest

from edge_agent.flow.totals import RunningTotals

S = 900 * 10**9


def test_corrections_are_counted_and_the_published_value_never_decreases(tmp_path):
    t = RunningTotals(tmp_path / "flow_totals.json")
    t.count({S: {"grid_import": 0.5}, 2 * S: {"grid_import": 0.25, "pv": 1.0, "house": 1.0}}, old={})
    assert t.payload()["grid_import_kwh"] == 0.75 and t.payload()["house_kwh"] == 1.0
    # slot 1 gets its PV and house late; slot 2 is found to have imported less (a correction downwards)
    t.count({S: {"grid_import": 0.5, "pv": 0.5, "house": 1.0}, 2 * S: {"grid_import": 0.05, "pv": 1.0}}, old={})
    assert t.totals["grid_import"] == pytest.approx(0.55) and t.totals["house"] == pytest.approx(1.0)
    assert t.payload()["grid_import_kwh"] == 0.75  # held: Home Assistant would read a decrease as a meter reset
    assert t.payload()["pv_kwh"] == 1.5
    assert t.count({3 * S: {"grid_import": 0.3}}, old={})
    assert t.payload()["grid_import_kwh"] == 0.85  # the true sum passed the held value again
    assert not t.count({3 * S: {"grid_import": 0.3}}, old={3 * S: {"grid_import": 0.3}})  # nothing to save


def test_a_restart_continues_and_older_slots_are_corrected_by_their_database_values(tmp_path):
    path = tmp_path / "flow_totals.json"
    t = RunningTotals(path)
    t.count({S: {"pv": 1.0}, 2 * S: {"pv": 2.0}}, old={})
    t.forget_before(2 * S)  # slot 1 left the recent window: its counted value is the database's
    t.save()
    again = RunningTotals(path)
    assert again.totals["pv"] == 3.0 and set(again.counted) == {2 * S}
    # a crash after slot 2 was rewritten with 2.5 but before the totals were saved: the file still says 2.0, the
    # database 2.5; the recomputation counts 2.5 − 2.0, not 2.5 − 2.5
    again.count({2 * S: {"pv": 2.5}}, old={2 * S: {"pv": 2.5}})
    # slot 1, corrected much later: what the database held is what was counted
    again.count({S: {"pv": 1.5}}, old={S: {"pv": 1.0, "flags": ""}})
    assert again.totals["pv"] == pytest.approx(4.0)


def test_the_first_release_file_is_read(tmp_path):
    path = tmp_path / "flow_totals.json"
    path.write_text(json.dumps({"until": 5 * S, "totals": {"pv": 10.0, "house": 4.0}}))
    t = RunningTotals(path)
    assert t.payload()["pv_kwh"] == 10.0 and t.until == 5 * S
    t.count({6 * S: {"pv": 1.0}}, old={6 * S: {"pv": 0.4}})  # never counted by the first release (after `until`)
    assert t.totals["pv"] == 11.0
    path.write_text("{not json")
    assert RunningTotals(path).payload()["pv_kwh"] == 0.0
