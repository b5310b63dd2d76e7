"""The grafana role provisions dashboards generated for the house's timezone (issue 18: daily panels sum local
days), by running the role's own tasks here with ansible (connection local, files under a temporary directory)."""

from __future__ import annotations

import json

import pytest

from tests.deploy.ansible_local import AVAILABLE, ROOT, SKIP_REASON, changed, play

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)


def run_role(tmp, out, timezone: str) -> dict:
    extra = {"home_energy_src": str(ROOT), "grafana_provisioning_dir": str(out / "provisioning"),
             "grafana_env_file": str(out / "grafana-env"), "grafana_dropin_dir": str(out / "dropin"),
             "home_energy_use_grafana_repo": False, "home_energy_manage_services": False,
             "home_energy_timezone": timezone}
    return play(tmp, [{"name": "Grafana role", "ansible.builtin.include_role": {"name": "grafana"}}], extra)


def test_dashboards_are_generated_for_the_house_timezone_and_a_second_run_changes_nothing(tmp_path):
    out = tmp_path / "target"
    run_role(tmp_path / "run1", out, "America/New_York")
    boards = out / "provisioning" / "dashboards" / "home-energy"
    flow = json.loads((boards / "home-energy-flow.json").read_text())
    assert flow["timezone"] == "America/New_York"
    assert any("tz('America/New_York')" in t["query"] for p in flow["panels"] for t in p["targets"])
    assert {p.name for p in boards.iterdir()} == {"home-energy-flow.json", "home-energy-power.json",
                                                  "home-energy-forecast.json", "home-energy-agent.json"}
    assert changed(run_role(tmp_path / "run2", out, "America/New_York")) == 0
    run_role(tmp_path / "run3", out, "Europe/Berlin")  # the committed files' default: the same bytes
    assert (boards / "home-energy-flow.json").read_text() == (
        ROOT / "edge_agent/grafana/provisioning/dashboards/home-energy/home-energy-flow.json").read_text()
