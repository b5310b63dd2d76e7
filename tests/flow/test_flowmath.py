"""Flow maths on hand-computed slots."""

import numpy as np
import pytest

from edge_agent.flowmath import RoleEnergy, compute


def one(**kw):
    arrays = {k: (None if v is None else np.array([v], dtype=float)) for k, v in kw.items()}
    fields, flags = compute(RoleEnergy(**arrays))
    return {k: float(v[0]) for k, v in fields.items()}, flags[0]


def test_pv_surplus_charges_battery_and_exports():
    # noon: PV 1.0 kWh, house uses 0.3, battery takes 0.4, 0.3 goes to the grid
    f, flags = one(grid_import=0.0, grid_export=0.3, pv=1.0, battery_charge=0.4, battery_discharge=0.0)
    assert f["house"] == pytest.approx(0.3)
    assert (f["pv_to_house"], f["pv_to_battery"], f["pv_to_grid"]) == pytest.approx((0.3, 0.4, 0.3))
    assert f["grid_to_house"] == pytest.approx(0) and f["grid_to_battery"] == pytest.approx(0)
    assert f["self_consumption"] == pytest.approx(0.7) and f["autarky"] == pytest.approx(1.0)
    assert flags == ""


def test_battery_discharge_at_night():
    # night: no PV, house 0.25, battery gives 0.2, grid 0.05
    f, _ = one(grid_import=0.05, grid_export=0.0, pv=0.0, battery_charge=0.0, battery_discharge=0.2)
    assert f["house"] == pytest.approx(0.25)
    assert f["battery_to_house"] == pytest.approx(0.2) and f["grid_to_house"] == pytest.approx(0.05)
    assert f["autarky"] == pytest.approx(0.8) and np.isnan(f["self_consumption"])


def test_export_with_import_in_the_same_slot():
    # PV 0.5, house 0.2, battery charged 0.1; the meter saw 0.1 imported and 0.3 exported within the slot:
    # the surplus is PV, so the battery is charged from PV and 0.1 of import/export cancel out (net allocation)
    f, _ = one(grid_import=0.1, grid_export=0.3, pv=0.5, battery_charge=0.1, battery_discharge=0.0)
    assert f["house"] == pytest.approx(0.2)
    assert f["pv_to_battery"] == pytest.approx(0.1) and f["grid_to_battery"] == pytest.approx(0.0)
    assert f["pv_to_grid"] == pytest.approx(0.2) and f["grid_to_house"] == pytest.approx(0.0)


def test_battery_charged_from_the_grid_at_night():
    f, _ = one(grid_import=0.5, grid_export=0.0, pv=0.0, battery_charge=0.3, battery_discharge=0.0)
    assert f["house"] == pytest.approx(0.2)
    assert f["grid_to_battery"] == pytest.approx(0.3) and f["grid_to_house"] == pytest.approx(0.2)
    # balance: every source equals every sink
    sources = f["grid_import"] + f["pv"] + f["battery_discharge"]
    sinks = f["house"] + f["grid_export"] + f["battery_charge"]
    assert sources == pytest.approx(sinks)


def test_grid_only_house_is_grid_import():
    f, flags = one(grid_import=0.37)
    assert f == {"grid_import": 0.37, "house": 0.37, "grid_to_house": 0.37, "autarky": 0.0}
    assert flags == ""


def test_missing_device_and_imbalance_are_flagged_never_negative():
    f, flags = one(grid_import=0.1, grid_export=0.0, pv=np.nan, battery_charge=0.0, battery_discharge=0.0)
    assert np.isnan(f["house"]) and flags == "missing_pv"
    f, flags = one(grid_import=0.0, grid_export=0.5, pv=0.2, battery_charge=0.0, battery_discharge=0.0)
    assert f["house"] == 0.0 and flags == "imbalance"
