"""The edge tools: `edge-agent check` finds a state_dir the agent's user cannot write; `models status` prints a
summary for people (`--json` for the rest); usage says edge-agent."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge_agent.cli import build_parser, check_state_dir
from edge_agent.models.cli import summary
from tests.helpers.agent import ROOT, write_config

NOBODY = "nobody"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_state_dir_writable_by_the_user_who_runs_the_agent(mosquitto_session, influxd_session):
    nobody = pwd.getpwnam(NOBODY)
    tmp_path = Path(tempfile.mkdtemp(prefix="he-check-"))  # pytest's own base is 0700: nobody could not reach it
    try:
        tmp_path.chmod(0o755)
        _check_state_dir(tmp_path, nobody, mosquitto_session, influxd_session)
    finally:
        shutil.rmtree(tmp_path)


def _check_state_dir(tmp_path: Path, nobody, mosquitto_session, influxd_session) -> None:
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, "x")
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # made by root (e.g. a first run with sudo)

    def check(*extra):
        return subprocess.run([sys.executable, "-m", "edge_agent", "check", "--config", str(cfg), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    r = check("--user", NOBODY)
    assert r.returncode == 1 and f"state_dir {state} is not writable by {NOBODY}" in r.stderr, r.stderr
    assert f"sudo install -d -o {NOBODY}" in r.stderr and "connectivity OK" in r.stdout
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    (state / "spool").mkdir()  # left by a run as root
    r = check("--user", NOBODY)
    assert r.returncode == 1 and f"{state / 'spool'} is not writable by {NOBODY}" in r.stderr
    os.chown(state / "spool", nobody.pw_uid, nobody.pw_gid)
    r = check("--user", NOBODY)
    assert r.returncode == 0 and f"state OK: {state} is writable by {NOBODY}" in r.stdout, r.stderr
    # a state_dir that does not exist yet must be creatable in its parent
    name, problems = check_state_dir(state / "new" / "deeper", NOBODY)
    assert name == NOBODY and problems == []
    name, problems = check_state_dir(tmp_path / "new", NOBODY)
    assert "does not exist and its parent" in problems[0]
    assert check("--user", "no-such-user-x").returncode == 2


def test_usage_says_edge_agent():
    assert build_parser().format_usage().startswith("usage: edge-agent ")
    r = subprocess.run([sys.executable, "-m", "edge_agent", "models", "status", "--help"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.stdout.startswith("usage: edge-agent models") and "--json" in r.stdout


STATUS = {
    "agent_version": "0.3.0", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"},
    "models": {"cnn-1": {"active": {"version": "20261124T101500Z", "sha256": "ab" * 32,
                                    "activated_at": "2026-11-24T10:20:00Z"},
                         "previous": {"version": "20261101T000000Z"}},
               "lstm-1": {"active": {"version": "20261124T101500Z", "sha256": "cd" * 32,
                                     "activated_at": "2026-11-24T10:20:00Z"}, "previous": None},
               "cnn-96": {"active": None, "previous": None}, "lstm-96": {"active": None, "previous": None}},
    "last_forecast": "2026-12-06T12:00:00Z",
    "counters": {"received": 68057, "stored": 68057, "stored_own": 26, "rejected": 0, "retries": 2},
    "skill": None,
    "guard": {"enabled": True, "min_slots": {"1": 300, "96": 480}, "models": {
        "cnn-1": {"version": "20261124T101500Z", "horizon": 1, "state": "serving", "skill": 0.0621, "slots": 640,
                  "baseline": "persistence", "reason": None},
        "lstm-1": {"version": "20261124T101500Z", "horizon": 1, "state": "learning", "skill": None, "slots": 120,
                   "baseline": None, "reason": None}},
        "serving": {"1": {"name": "cnn-1", "model": "cnn", "version": "20261124T101500Z", "fallback_reason": None},
                    "96": {"name": "baseline-96", "model": "baseline", "version": "median_7_days",
                           "fallback_reason": "no model"}}},
    "calendar": None}


def test_models_status_prints_a_summary():
    text = summary(STATUS, "http://pi:8750")
    assert text.splitlines()[:2] == ["Edge agent 0.3.0 at http://pi:8750 (interpreter ai-edge-litert 2.3.0)",
                                     "Last forecast: 2026-12-06 12:00:00 UTC"]
    assert ("  cnn-1    20261124T101500Z  since 2026-11-24 10:20:00 UTC  serving, skill +6.2% vs persistence "
            "(640 slots)  (previous 20261101T000000Z)") in text
    assert "lstm-1   20261124T101500Z  since 2026-11-24 10:20:00 UTC  learning (120 of 300 slots scored)" in text
    assert "  cnn-96   none" in text
    assert ("Serving: next 15 min: cnn-1 20261124T101500Z; day ahead: baseline median_7_days (no model)") in text
    assert ("Ingest: 68,057 messages received, 68,057 device points stored (+26 of the agent's own), 0 rejected, "
            "2 database retries") in text
    assert len(text.splitlines()) <= 12
    summary({}, "http://x")  # an older agent's status: whatever is missing is shown as unknown


def test_models_status_against_a_running_agent(agent_with_api, tmp_path):
    from tests.helpers.models import TOKEN

    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    url = agent_with_api.components["api"].url
    base = [sys.executable, "-m", "edge_agent", "models", "--url", url, "--token-file", str(token), "status"]
    r = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("Edge agent ") and "Models:" in r.stdout, r.stderr
    r = subprocess.run([*base, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert set(json.loads(r.stdout)) >= {"agent_version", "models", "counters"}
