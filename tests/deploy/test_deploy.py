"""Deployment files: docker-compose validates, the compose agent config checks, Ansible lints, and (when this
machine can) the playbook provisions a debootstrapped Debian root twice with changed=0 on the second run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ENV = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
           if line and not line.startswith("#"))


def compose_config(path) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-f", str(path), "config", "-q"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **ENV})


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose not installed (apt-get install "
                                                                "docker-compose)")
def test_compose_file_is_valid_and_broken_ones_are_caught(tmp_path):
    ok = compose_config(ROOT / "docker-compose.yml")
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("restart: unless-stopped",
                                                                        "restart: unless-stopped\n    bogus_key: 1", 1))
    assert compose_config(broken).returncode != 0


def test_compose_agent_config_checks():
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--offline", "--config",
                        "edge_agent/examples/compose-agent.toml"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **ENV})
    assert r.returncode == 0, r.stderr


def test_example_config_checks():
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--offline", "--config",
                        "edge_agent/examples/seed-hackathon.toml"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


ANSIBLE_VENV = ROOT / ".venv-ansible" / "bin"


@pytest.mark.skipif(not (ANSIBLE_VENV / "ansible-lint").exists(), reason="no .venv-ansible (make venv-ansible)")
def test_ansible_lint_clean():
    r = subprocess.run([str(ANSIBLE_VENV / "ansible-lint"), "ansible/site.yml"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.timeout(1500)
@pytest.mark.skipif(os.environ.get("HOME_ENERGY_TEST_ANSIBLE", "1") == "0", reason="HOME_ENERGY_TEST_ANSIBLE=0")
@pytest.mark.skipif(os.geteuid() != 0, reason="the chroot provisioning test needs root")
@pytest.mark.skipif(not shutil.which("debootstrap"), reason="debootstrap not installed")
@pytest.mark.skipif(not (ANSIBLE_VENV / "ansible-playbook").exists(), reason="no .venv-ansible (make venv-ansible)")
def test_playbook_provisions_a_debian_root_idempotently():
    r = subprocess.run([sys.executable, "tests/deploy/chroot_provision.py"], cwd=ROOT, capture_output=True, text=True,
                       timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["problems"] == [] and result["second_run_changed"] == 0 and result["first_run_changed"] > 10
