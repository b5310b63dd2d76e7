"""`make test-ansible`: provision a fresh Debian bookworm root with ansible/site.yml through the chroot connection.

1. debootstrap (minbase + python3 + systemd) into a temporary directory — from a cached tarball when present
   (build/debootstrap-bookworm.tar);
2. a `usr/sbin/policy-rc.d` that exits 101, so no package starts a daemon on the host;
3. ansible-playbook with unreachable repositories switched off (Debian's influxdb 1.x, no Grafana package, no
   TensorFlow install for the server) and the example vault values;
4. checks inside the root: users, files, the rendered agent config passes `python -m edge_agent check --offline`
   with the installed venv, units enabled;
5. a second run must report changed=0.
Prints one JSON line with the figures; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "debootstrap-bookworm.tar"
ANSIBLE = ROOT / ".venv-ansible" / "bin" / "ansible-playbook"
HOST_CA = "/etc/ssl/host-ca-bundle.crt"
PACKAGES = "python3,python3-venv,python3-pip,python3-apt,systemd,ca-certificates"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, text=True, **kw)


def make_root(root: Path) -> float:
    t = time.time()
    if CACHE.exists():
        run(["tar", "-xf", str(CACHE), "-C", str(root)])
    else:
        run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(root),
             "http://deb.debian.org/debian"], stdout=subprocess.DEVNULL)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        run(["tar", "-cf", str(CACHE), "-C", str(root), "."])
    return time.time() - t


def playbook(root: Path, workdir: Path) -> tuple[str, float]:
    inv = workdir / "inventory.ini"
    inv.write_text(f"[pi]\nchroot-pi ansible_connection=community.general.chroot ansible_host={root}\n"
                   f"[workstation]\nchroot-ws ansible_connection=community.general.chroot ansible_host={root}\n")
    extra = {"home_energy_use_influxdata_repo": False, "home_energy_use_grafana_repo": False,
             "home_energy_manage_services": False, "influxdb_flavour": 1, "server_install_python_deps": False,
             "ansible_python_interpreter": "/usr/bin/python3"}
    t = time.time()
    # Modules run inside the root with this environment: point TLS clients (pip) at the host's CA bundle, copied
    # into the root, so that a TLS-intercepting proxy on this machine is trusted there too.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", PIP_CERT=HOST_CA, SSL_CERT_FILE=HOST_CA,
               REQUESTS_CA_BUNDLE=HOST_CA, PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([str(ANSIBLE), "-i", str(inv), str(ROOT / "ansible" / "site.yml"),
                        "-e", f"@{ROOT / 'ansible' / 'group_vars' / 'vault.example.yml'}", "-e", json.dumps(extra)],
                       cwd=ROOT / "ansible", capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(r.stdout[-6000:], r.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"ansible-playbook failed ({r.returncode})")
    return r.stdout, time.time() - t


def changed(recap: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", recap.split("PLAY RECAP")[-1]))


def check_root(root: Path) -> list[str]:
    problems = []

    def exists(p: str) -> None:
        if not (root / p.lstrip("/")).exists():
            problems.append(f"missing {p}")

    for user in ("edge-agent", "home-energy"):
        if f"\n{user}:" not in "\n" + (root / "etc/passwd").read_text():
            problems.append(f"no user {user}")
    for p in ("/etc/edge-agent/agent.toml", "/etc/edge-agent/api-token", "/etc/mosquitto/conf.d/home-energy.conf",
              "/etc/mosquitto/passwd", "/etc/influxdb/influxdb.conf", "/etc/systemd/system/edge-agent.service",
              "/etc/home-energy-server/server.toml", "/etc/systemd/system/home-energy-server.service",
              "/etc/grafana/provisioning/datasources/home-energy.yaml",
              "/etc/grafana/provisioning/dashboards/home-energy/home-energy-flow.json",
              "/opt/home-energy/venv-edge/bin/python", "/opt/home-energy/app/edge_agent/agent.py"):
        exists(p)
    for unit in ("edge-agent", "home-energy-server", "mosquitto", "influxdb"):
        link = root / f"etc/systemd/system/multi-user.target.wants/{unit}.service"
        # an enabled unit is a symlink whose (absolute) target exists inside the root, not on this host
        if not link.is_symlink() or not (root / os.readlink(link).lstrip("/")).exists():
            problems.append(f"unit {unit} not enabled")
    mode = (root / "etc/edge-agent/api-token").stat().st_mode & 0o777
    if mode != 0o640:
        problems.append(f"api-token mode {oct(mode)}")
    if "max_queued_messages 0" not in (root / "etc/mosquitto/conf.d/home-energy.conf").read_text():
        problems.append("mosquitto max_queued_messages not raised")
    if "tensorflow" in " ".join(os.listdir(root / "opt/home-energy/venv-edge/lib/python3.11/site-packages")).lower():
        problems.append("TensorFlow in the edge venv")
    r = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(root), "/opt/home-energy/venv-edge/bin/python", "-m", "edge_agent", "check",
                        "--offline", "--config", "/etc/edge-agent/agent.toml"],
                       env={"PYTHONPATH": "/opt/home-energy/app", "PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True, cwd="/")
    if r.returncode != 0:
        problems.append(f"agent config check failed: {r.stdout} {r.stderr}")
    return problems


def main() -> int:
    if os.geteuid() != 0:
        print("test-ansible needs root (debootstrap, chroot)", file=sys.stderr)
        return 2
    if not ANSIBLE.exists():
        print("no .venv-ansible: make venv-ansible", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ansible-chroot-"))
    root = work / "root"
    root.mkdir()
    mounted = []
    try:
        boot = make_root(root)
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\n# nothing starts inside the test root\nexit 101\n")
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / HOST_CA.lstrip("/"))
        run(["mount", "-t", "proc", "proc", str(root / "proc")])
        mounted.append(root / "proc")
        out1, t1 = playbook(root, work)
        out2, t2 = playbook(root, work)
        problems = check_root(root)
        result = {"root_seconds": round(boot, 1), "first_run_seconds": round(t1, 1), "first_run_changed": changed(out1),
                  "second_run_seconds": round(t2, 1), "second_run_changed": changed(out2), "problems": problems}
        if changed(out2):
            print(out2.split("PLAY RECAP")[0][-4000:], file=sys.stderr)
        print(json.dumps(result))
        return 0 if not problems and changed(out2) == 0 else 1
    finally:
        for m in mounted:
            subprocess.run(["umount", "-l", str(m)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
