"""The small version of `make bench-restore`: a live agent and server backed up, restored into fresh instances,
every series, the active and previous models, the server's index, registry and key compared."""

from __future__ import annotations

import pytest

from tools.restore_check import run


@pytest.mark.timeout(600)
def test_backup_restores_agent_and_server(tmp_path, seed_bundles):
    result = run(tmp_path / "restore", seed_bundles, readings=600, log=lambda *_: None)
    assert result["restored"] and result["series_equal"] and result["models_equal"] and result["server_equal"], result
    assert result["models"] == 4 and result["server_versions"] == 8
    # raw readings in the default policy, the flow and the aggregates in the keep policy
    assert {"autogen.EnergyMeter", "keep.energy_flow", "keep.device_slots"} <= set(result["series"]), result


def test_a_damaged_backup_is_refused(tmp_path):
    import json

    from edge_agent.backup import verify

    folder = tmp_path / "edge-x"
    (folder / "state").mkdir(parents=True)
    (folder / "state" / "flow_totals.json").write_text("{}")
    import hashlib

    sha = hashlib.sha256(b"{}").hexdigest()
    (folder / "manifest.json").write_text(json.dumps({"kind": "edge-agent-backup", "files":
                                                      {"state/flow_totals.json": sha}}))
    assert verify(folder)["kind"] == "edge-agent-backup"
    (folder / "state" / "flow_totals.json").write_text("{\"x\": 1}")
    with pytest.raises(ValueError, match="flow_totals.json is missing or damaged"):
        verify(folder)
