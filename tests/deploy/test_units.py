"""The systemd units the roles install: rendered by ansible from the role templates, then checked by
`systemd-analyze verify` (warnings count) and for the keys the agent's lifecycle depends on (notify, watchdog,
restart) and the hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.ansible_local import AVAILABLE, SKIP_REASON, render

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
needs_systemd = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                   reason="systemd-analyze not installed (apt-get install systemd)")

HARDENING = {"NoNewPrivileges": "true", "ProtectSystem": "strict", "ProtectHome": "true", "PrivateTmp": "true",
             "PrivateDevices": "true", "ProtectKernelTunables": "true", "ProtectKernelModules": "true",
             "ProtectControlGroups": "true", "RestrictSUIDSGID": "true", "LockPersonality": "true",
             "RestrictRealtime": "true", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
             "CapabilityBoundingSet": "", "UMask": "0077"}


def service_keys(unit: str) -> dict[str, str]:
    """The [Service] section as key -> value (the last one wins, as in systemd for these keys)."""
    keys, section = {}, None
    for line in unit.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys[k] = v
    return keys


def settings_with(unit: str, text: str) -> list[str]:
    """The unit's lines that mention `text`, comments aside."""
    return [line for line in unit.splitlines() if text in line and not line.lstrip().startswith("#")]


def fake_venv(tmp: Path, *binaries: str) -> Path:
    """A directory whose bin/ holds this interpreter under the given names: verify checks that ExecStart exists."""
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    for name in binaries:
        (venv / "bin" / name).symlink_to(sys.executable)
    return venv


def verify(tmp: Path, name: str, text: str) -> str:
    """systemd-analyze verify's complaints about the unit (empty when it is clean)."""
    unit = tmp / "units" / name
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    return (r.stdout + r.stderr).strip() + ("" if r.returncode == 0 else f" (exit {r.returncode})")


def agent_unit(tmp: Path, **extra) -> str:
    return render(tmp, "edge_agent", "edge-agent.service.j2",
                  {"edge_agent_venv": str(fake_venv(tmp, "edge-agent")), **extra})


@needs_systemd
def test_agent_unit_is_notify_with_a_watchdog_and_restarts_always(tmp_path):
    unit = agent_unit(tmp_path)
    assert verify(tmp_path, "edge-agent.service", unit) == ""
    keys = service_keys(unit)
    assert {k: keys.get(k) for k in ("Type", "NotifyAccess", "WatchdogSec", "Restart")} == {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "Restart": "always"}
    assert {k: keys.get(k) for k in HARDENING} == HARDENING
    assert keys["ReadWritePaths"] == "/var/lib/edge-agent" and keys["User"] == "edge-agent"
    # the installed package's console script; no source tree, no PYTHONPATH
    venv = tmp_path / "venv"
    assert keys["ExecStartPre"] == f"{venv}/bin/edge-agent check --offline --config /etc/edge-agent/agent.toml"
    assert keys["ExecStart"] == f"{venv}/bin/edge-agent run --config /etc/edge-agent/agent.toml"
    assert not settings_with(unit, "PYTHONPATH") and keys["WorkingDirectory"] == "/var/lib/edge-agent"


@needs_systemd
def test_watchdog_follows_its_variable_and_verify_catches_a_bad_value(tmp_path):
    assert service_keys(agent_unit(tmp_path / "a", edge_agent_watchdog_sec=30))["WatchdogSec"] == "30"
    # the check can fail: a value systemd cannot parse is reported
    bad = agent_unit(tmp_path / "b", edge_agent_watchdog_sec="sixty")
    assert "Failed to parse sec value" in verify(tmp_path / "b", "edge-agent.service", bad)


@needs_systemd
def test_server_unit_verifies_and_keeps_its_files_private(tmp_path):
    venv = fake_venv(tmp_path, "gunicorn")
    purelib = venv / "lib" / "python3.11" / "site-packages"  # the home_energy_package role finds it in the venv
    unit = render(tmp_path, "server", "home-energy-server.service.j2",
                  {"server_venv": str(venv), "home_energy_purelib": str(purelib)})
    assert verify(tmp_path, "home-energy-server.service", unit) == ""
    keys = service_keys(unit)
    # gunicorn with the installed package's settings, from / (gunicorn puts its directory on sys.path)
    assert keys["ExecStart"] == f"{venv}/bin/gunicorn -c {purelib}/server/gunicorn.conf.py server.wsgi:app"
    assert not settings_with(unit, "PYTHONPATH") and keys["WorkingDirectory"] == "/"
    assert keys["UMask"] == "0077" and keys["ProtectSystem"] == "strict" and keys["NoNewPrivileges"] == "true"
    assert keys["ReadWritePaths"] == "/var/lib/home-energy-server"


@needs_systemd
def test_nightly_backup_units_verify(tmp_path):
    """edge-agent-backup and home-energy-server-backup: oneshot services run by a persistent nightly timer, as the
    service's own user, writing only the state/data directory and the backup folder."""
    edge = render(tmp_path, "edge_agent", "edge-agent-backup.service.j2",
                  {"edge_agent_venv": str(fake_venv(tmp_path, "edge-agent"))})
    timer = render(tmp_path, "edge_agent", "edge-agent-backup.timer.j2", {})
    assert verify(tmp_path, "edge-agent-backup.service", edge) == ""
    assert verify(tmp_path, "edge-agent-backup.timer", timer) == ""  # its service is beside it in units/
    keys = service_keys(edge)
    assert keys["Type"] == "oneshot" and keys["User"] == "edge-agent" and keys["UMask"] == "0077"
    assert keys["ReadWritePaths"] == "/var/lib/edge-agent /var/backups/edge-agent"
    assert "--keep 7" in keys["ExecStart"] and "Persistent=true" in timer and "OnCalendar=*-*-* 03:17:00" in timer
    venv = fake_venv(tmp_path / "s", "home-energy-server")
    server = render(tmp_path, "server", "home-energy-server-backup.service.j2", {"server_venv": str(venv)})
    assert verify(tmp_path, "home-energy-server-backup.service", server) == ""
    keys = service_keys(server)
    assert keys["User"] == "home-energy" and keys["ExecStart"].endswith("backup --to /var/backups/home-energy-server "
                                                                         "--keep 14")


@needs_systemd
def test_raw_budget_units_verify(tmp_path):
    """edge-agent-raw-budget: the agent's size rule run hourly as the InfluxDB admin (the agent's user is not one),
    root only for the admin's password file and the agent's 0700 state directory, nothing else writable."""
    unit = render(tmp_path, "edge_agent", "edge-agent-raw-budget.service.j2",
                  {"edge_agent_venv": str(fake_venv(tmp_path, "edge-agent"))})
    timer = render(tmp_path, "edge_agent", "edge-agent-raw-budget.timer.j2", {})
    assert verify(tmp_path, "edge-agent-raw-budget.service", unit) == ""
    assert verify(tmp_path, "edge-agent-raw-budget.timer", timer) == ""
    keys = service_keys(unit)
    assert keys["Type"] == "oneshot" and keys["User"] == "root" and keys["ReadWritePaths"] == "/var/lib/edge-agent"
    assert keys["CapabilityBoundingSet"] == "CAP_DAC_OVERRIDE" and keys["ProtectSystem"] == "strict"
    assert keys["ExecStart"].endswith("raw-budget --config /etc/edge-agent/agent.toml --admin-user admin "
                                      "--admin-password-file /etc/edge-agent/influxdb-admin")
    assert "OnCalendar=hourly" in timer and "Persistent=true" in timer
