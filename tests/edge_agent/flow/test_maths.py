"""Flow maths on hand-computed slots, and its invariants under hypothesis."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.flow.maths import BatteryState, RoleEnergy, compute


def one(state: BatteryState | None = None, **kw):
    arrays = {k: (None if v is None else np.array([v], dtype=float)) for k, v in kw.items()}
    fields, flags, _ = compute(RoleEnergy(**arrays), state)
    return {k: float(v[0]) for k, v in fields.items()}, flags[0]


def test_pv_surplus_charges_battery_and_exports():
    # noon: PV 1.0 kWh, house uses 0.3, battery takes 0.4, 0.3 goes to the grid
    f, flags = one(grid_import=0.0, grid_export=0.3, pv=1.0, battery_charge=0.4, battery_discharge=0.0)
    assert f["house"] == pytest.approx(0.3)
    assert (f["pv_to_house"], f["pv_to_battery"], f["pv_to_grid"]) == pytest.approx((0.3, 0.4, 0.3))
    assert f["grid_to_house"] == pytest.approx(0) and f["grid_to_battery"] == pytest.approx(0)
    assert f["self_consumption"] == pytest.approx(0.7) and f["autarky"] == pytest.approx(1.0)
    assert flags == ""


def test_battery_discharge_at_night_split_by_origin():
    # night: no PV, house 0.25, battery gives 0.2 (60 % of its content came from PV), grid 0.05
    f, _ = one(BatteryState(content_kwh=2.0, pv_share=0.6), grid_import=0.05, grid_export=0.0, pv=0.0,
               battery_charge=0.0, battery_discharge=0.2)
    assert f["house"] == pytest.approx(0.25)
    assert f["battery_to_house"] == pytest.approx(0.2) and f["grid_to_house"] == pytest.approx(0.05)
    assert f["battery_to_house_pv"] == pytest.approx(0.12) and f["battery_to_house_grid"] == pytest.approx(0.08)
    assert f["autarky"] == pytest.approx(0.12 / 0.25) and np.isnan(f["self_consumption"])
    assert f["battery_content_kwh"] == pytest.approx(1.8) and f["battery_pv_share"] == pytest.approx(0.6)


def test_export_with_import_in_the_same_slot_balances():
    # PV 0.5, house 0.2, battery charged 0.1; the meter counted 0.1 imported and 0.3 exported within the slot:
    # export comes from PV; the imported 0.1 went into the battery (PV served the house)
    f, _ = one(grid_import=0.1, grid_export=0.3, pv=0.5, battery_charge=0.1, battery_discharge=0.0)
    assert f["house"] == pytest.approx(0.2)
    assert f["pv_to_grid"] == pytest.approx(0.3) and f["pv_to_house"] == pytest.approx(0.2)
    assert f["grid_to_battery"] == pytest.approx(0.1) and f["pv_to_battery"] == pytest.approx(0.0)


def test_charge_and_discharge_in_one_slot_never_invent_import():
    # issue 18: 0.096 kWh grid → battery came out while grid import was 0
    f, _ = one(grid_import=0.0, grid_export=0.0037, pv=0.3, battery_charge=0.2, battery_discharge=0.15)
    assert f["grid_to_battery"] == 0.0
    assert f["pv_to_grid"] + f["battery_to_grid"] == pytest.approx(0.0037)
    assert f["battery_cycled"] == pytest.approx(0.2 - f["pv_to_battery"])


def test_battery_charged_from_the_grid_at_night_is_not_autarkic_later():
    state = BatteryState(content_kwh=0.0, pv_share=0.0)
    arrays = RoleEnergy(grid_import=np.array([2.2, 0.0]), grid_export=np.array([0.0, 0.0]), pv=np.array([0.0, 0.0]),
                        battery_charge=np.array([2.0, 0.0]), battery_discharge=np.array([0.0, 0.5]))
    fields, _flags, end = compute(arrays, state)
    assert fields["grid_to_battery"][0] == pytest.approx(2.0) and fields["house"][0] == pytest.approx(0.2)
    assert fields["battery_to_house_grid"][1] == pytest.approx(0.5) and fields["autarky"][1] == pytest.approx(0.0)
    assert end.content_kwh == pytest.approx(1.5) and end.pv_share == 0.0


def test_grid_only_house_is_grid_import():
    f, flags = one(grid_import=0.37)
    assert f == {"grid_import": 0.37, "house": 0.37, "grid_to_house": 0.37, "self_supplied": 0.0, "autarky": 0.0}
    assert flags == ""


def test_missing_device_and_imbalance_are_flagged_never_negative():
    f, flags = one(grid_import=0.1, grid_export=0.0, pv=np.nan, battery_charge=0.0, battery_discharge=0.0)
    assert np.isnan(f["house"]) and flags == "missing_pv"
    f, flags = one(grid_import=0.0, grid_export=0.5, pv=0.2, battery_charge=0.0, battery_discharge=0.0)
    assert np.isnan(f["house"]) and np.isnan(f["pv_to_grid"]) and flags == "imbalance"


kwh = st.floats(0, 3, allow_nan=False)


@settings(max_examples=500, deadline=None)
@given(imp=kwh, exp=kwh, pv=kwh, chg=kwh, dis=kwh, c=st.floats(0, 10), s=st.floats(0, 1))
def test_every_flow_balances(imp, exp, pv, chg, dis, c, s):
    e = RoleEnergy(*(np.array([v]) for v in (imp, exp, pv, chg, dis)))
    f, flags, end = compute(e, BatteryState(c, s))
    g = {k: float(v[0]) for k, v in f.items()}
    if "imbalance" in flags[0]:
        assert np.isnan(g["house"])
        return
    eps = 1e-9 + max(0.0, -(imp - exp + pv + dis - chg))  # within the tolerance, house is clamped to 0
    assert all(v >= -eps for k, v in g.items() if np.isfinite(v)), g
    assert g["pv_to_house"] + g["pv_to_battery"] + g["pv_to_grid"] == pytest.approx(pv, abs=eps)
    assert g["grid_to_house"] + g["grid_to_battery"] + g["export_unexplained"] == pytest.approx(imp, abs=eps)
    assert g["battery_to_house"] + g["battery_to_grid"] + g["battery_cycled"] == pytest.approx(dis, abs=eps)
    assert g["pv_to_battery"] + g["grid_to_battery"] + g["battery_cycled"] == pytest.approx(chg, abs=eps)
    assert g["pv_to_grid"] + g["battery_to_grid"] + g["export_unexplained"] == pytest.approx(exp, abs=eps)
    assert g["pv_to_house"] + g["battery_to_house"] + g["grid_to_house"] == pytest.approx(g["house"], abs=eps)
    assert g["battery_to_house_pv"] + g["battery_to_house_grid"] == pytest.approx(g["battery_to_house"], abs=eps)
    assert 0 <= end.pv_share <= 1 and end.content_kwh >= 0
    if g["house"] > 0:
        assert 0 <= g["autarky"] <= 1 + eps


def test_every_field_is_in_the_schema():
    """shared/schema.py is the contract the dashboards and the server read: the flow writes nothing else."""
    from shared.schema import ENERGY_FLOW_FIELDS, ENERGY_FLOW_RATIOS, ENERGY_FLOW_STATE

    e = RoleEnergy(*(np.array([0.1]) for _ in range(5)))
    fields, _flags, _state = compute(e, BatteryState())
    assert set(fields) == set(ENERGY_FLOW_FIELDS) | set(ENERGY_FLOW_RATIOS) | set(ENERGY_FLOW_STATE)
