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


def compose(*files, env_file=ROOT / ".env.example", quiet: bool = True) -> subprocess.CompletedProcess:
    """`docker-compose config` with the values of `env_file` only (never a local .env or this environment's)."""
    args = [a for f in files for a in ("-f", str(f))]
    return subprocess.run(["docker-compose", "--env-file", str(env_file), *args, "config",
                           *(["-q"] if quiet else [])], cwd=ROOT, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k not in ENV})


def compose_config(path) -> subprocess.CompletedProcess:
    return compose(path)


needs_compose = pytest.mark.skipif(not shutil.which("docker-compose"),
                                   reason="docker-compose not installed (apt-get install docker-compose)")


@needs_compose
def test_compose_file_is_valid_and_broken_ones_are_caught(tmp_path):
    ok = compose_config(ROOT / "docker-compose.yml")
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("restart: unless-stopped",
                                                                        "restart: unless-stopped\n    bogus_key: 1", 1))
    assert compose_config(broken).returncode != 0


def published(config: str) -> dict[str, list]:
    """service -> its published ports, from `docker-compose config` (YAML)."""
    import yaml

    return {name: svc.get("ports", []) for name, svc in yaml.safe_load(config)["services"].items()}


# The opt-in that docs/deployment.md shows for the model API (the host's LAN address, not every interface).
OVERRIDE = """services:
  edge-agent:
    ports: ["192.0.2.10:8750:8750"]
"""


@needs_compose
def test_compose_runs_influxdb_1x_and_keeps_the_model_api_and_influxdb_off_the_host(tmp_path):
    import yaml

    r = compose(ROOT / "docker-compose.yml", quiet=False)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert services["influxdb"]["image"].startswith("influxdb:1.")
    assert services["influxdb"]["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    ports = published(r.stdout)
    assert ports["edge-agent"] == [] and ports["influxdb"] == []
    # Grafana reads with the read-only user, the agent writes with its own
    influx_env, grafana_env = services["influxdb"]["environment"], services["grafana"]["environment"]
    assert grafana_env["INFLUXDB_USER"] == influx_env["INFLUXDB_READ_USER"]
    assert any("influxdb-v1.yaml" in str(v) for v in services["grafana"]["volumes"])
    # the documented opt-in publishes the API on the address given, and only there
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(OVERRIDE)
    r = compose(ROOT / "docker-compose.yml", override, quiet=False)
    assert r.returncode == 0, r.stderr
    assert published(r.stdout)["edge-agent"] == ["192.0.2.10:8750:8750/tcp"]  # docker-compose 1.29's form


@needs_compose
def test_compose_refuses_to_start_with_a_missing_secret(tmp_path):
    env = tmp_path / "env"
    env.write_text("".join(f"{k}={v}\n" for k, v in ENV.items() if k != "INFLUXDB_ADMIN_PASSWORD"))
    r = compose(ROOT / "docker-compose.yml", env_file=env)
    assert r.returncode != 0 and "INFLUXDB_ADMIN_PASSWORD" in r.stderr


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
