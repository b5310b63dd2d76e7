"""`make test-ansible`: provision a fresh Debian bookworm root with ansible/site.yml through the chroot connection.

1. debootstrap (minbase + python3 + systemd + what every real target has: sudo, iproute2, procps) into a
   temporary directory — from a cached tarball when present (build/debootstrap-bookworm-<hash of the list>.tar);
2. a `usr/sbin/policy-rc.d` that exits 101, so no package starts a daemon on the host;
3. ansible-playbook with the defaults (InfluxDB 1.x) except what a chroot cannot do: no Grafana repository, no
   service started (`home_energy_manage_services=false`), the server's package without its dependencies (no
   TensorFlow); example vault values. The wheel is built on this machine (the controller) into the work dir;
   it is deleted before the second run, which must rebuild the same bytes;
4. every task the run skipped must be listed in SKIPPED with the check that stands in for it (a new task that
   only a real run executes fails this test until it gets one);
5. checks inside the root: users, files, owners and modes of the private files, the package installed from the
   wheel (no copied source tree), the rendered agent config (API bind address, `edge-agent check --offline` with
   the venv's console script), the server's console script (with Flask added, as a stand-in for its skipped
   dependencies), units enabled and accepted by `systemd-analyze verify`, and the server's key-pair task run for
   real (third, small run);
6. a second run of site.yml, with the wheel rebuilt from scratch, must report changed=0.
Prints one JSON line with the figures; exits non-zero on any failure. `--keep DIR` keeps the root there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / ".venv-ansible" / "bin" / "ansible-playbook"
HOST_CA = "/etc/ssl/host-ca-bundle.crt"
# minbase plus what every real target has and the run needs: sudo (become_user), iproute2 (ansible_default_ipv4,
# the agent API's default address), procps (/bin/kill in packaged units).
PACKAGES = "python3,python3-venv,python3-pip,python3-apt,systemd,ca-certificates,sudo,iproute2,procps"
CACHE = ROOT / "build" / f"debootstrap-bookworm-{hashlib.sha256(PACKAGES.encode()).hexdigest()[:8]}.tar"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
PY = "3.11"  # bookworm's python3: the venvs' site-packages are lib/python3.11/site-packages

# What this run may not do, and the values a real run would use otherwise.
EXTRA_VARS = {"home_energy_use_grafana_repo": False, "home_energy_manage_services": False,
              "server_install_python_deps": False, "ansible_python_interpreter": "/usr/bin/python3"}

_VERIFY = "the unit is accepted by systemd-analyze verify inside the root"
# Tasks (role: name) that the chroot run skips, each with what checks it instead.
SKIPPED = {
    "mosquitto: Start Mosquitto": _VERIFY,
    "mosquitto: Restart mosquitto": _VERIFY,
    "influxdb: InfluxDB 2.x (InfluxData's package; untested here)":
        "not the default; untested: no InfluxDB 2.x server can be installed here (docs/deployment.md)",
    "influxdb: Start InfluxDB": _VERIFY,
    "influxdb: Restart influxdb": _VERIFY,
    "influxdb: Admin, database, users and grants":
        "tests/deploy/test_influxdb_setup.py runs these tasks with ansible against a real influxd with auth on",
    "grafana: Repository key": "apt.grafana.com is unreachable here and no Grafana package exists (FACTS.md)",
    "grafana: Repository": "apt.grafana.com is unreachable here (FACTS.md)",
    "grafana: Install Grafana": "no Grafana package here (FACTS.md)",
    "grafana: Enable and start Grafana": "no Grafana here; the drop-in and its environment file are checked",
    "grafana: Restart grafana": "no Grafana here; the drop-in and its environment file are checked",
    "edge_agent: Enable the agent": "its offline equivalent (the wants/ link) runs; " + _VERIFY,
    "edge_agent: Enable the backup timer": "its offline equivalent (the timers.target.wants/ link) runs; " + _VERIFY,
    "edge_agent: Enable the raw-budget timer": "its offline equivalent (the timers.target.wants/ link) runs; "
                                              + _VERIFY,
    "server: Enable the backup timer": "its offline equivalent (the timers.target.wants/ link) runs; " + _VERIFY,
    "edge_agent: Start the agent": _VERIFY + "; the config passes `edge_agent check --offline` (ExecStartPre)",
    "edge_agent: Restart edge-agent": _VERIFY,
    "edge_agent: Restart journald": "the drop-in /etc/systemd/journald.conf.d/home-energy.conf exists in the root "
                                    "(checked below) and its keys are checked by tests/deploy/test_pi_settings.py",
    "server: Dependencies of the [server] extra: TensorFlow, Flask, gunicorn":
        "≈2 GB TensorFlow; the package is installed from the wheel without them, the [server] extra's requirements "
        "are checked in the installed metadata, Flask is added and `home-energy-server hash-password` runs as the "
        "server's user; tests/deploy/test_package.py runs the unit's gunicorn command from an installed wheel",
    "home_energy_package: Wheels of earlier versions removed":
        "a fresh root has no earlier wheel; tests/deploy/test_package.py bumps the version and checks that the "
        "old wheel goes",
    "server: Signing key pair": "run for real in the root by a third run with the edge venv's python (cryptography)",
    "server: Enable the server": "its offline equivalent (the wants/ link) runs; " + _VERIFY,
    "server: Start the server": _VERIFY + " (except gunicorn, absent without the venv)",
    "server: Restart home-energy-server": _VERIFY,
}

# Private files: (mode, owner, group).
MODES = {
    "/etc/edge-agent": (0o750, "root", "edge-agent"),
    "/etc/edge-agent/agent.toml": (0o640, "root", "edge-agent"),
    "/etc/edge-agent/api-token": (0o640, "root", "edge-agent"),
    "/etc/edge-agent/mqtt-password": (0o640, "root", "edge-agent"),
    "/etc/edge-agent/influxdb-secret": (0o640, "root", "edge-agent"),
    "/etc/edge-agent/influxdb-admin": (0o600, "root", "root"),  # the raw-budget timer's; never the agent's
    "/var/lib/edge-agent": (0o700, "edge-agent", "edge-agent"),
    "/etc/home-energy-server": (0o750, "root", "home-energy"),
    "/etc/home-energy-server/server.toml": (0o640, "root", "home-energy"),
    "/etc/home-energy-server/api-token": (0o640, "root", "home-energy"),
    "/etc/home-energy-server/admin-password-hash": (0o640, "root", "home-energy"),
    "/var/lib/home-energy-server": (0o700, "home-energy", "home-energy"),
    "/var/lib/home-energy-server/keys": (0o700, "home-energy", "home-energy"),
    "/var/lib/home-energy-server/keys/signing.key": (0o600, "home-energy", "home-energy"),
    "/var/lib/influxdb": (0o700, "influxdb", "influxdb"),
    "/etc/mosquitto/passwd": (0o640, "root", "mosquitto"),
    "/etc/mosquitto/passwd.plain": (0o600, "root", "root"),
    "/etc/mosquitto/conf.d/home-energy.conf": (0o640, "root", "mosquitto"),
    "/etc/default/grafana-server-home-energy": (0o600, "root", "root"),
}


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


def playbook(root: Path, workdir: Path, book: Path, extra: dict | None = None) -> tuple[dict, float]:
    """Run a playbook over the chroot connection; returns the json callback's document and the seconds."""
    inv = workdir / "inventory.ini"
    inv.write_text(f"[pi]\nchroot-pi ansible_connection=community.general.chroot ansible_host={root}\n"
                   f"[workstation]\nchroot-ws ansible_connection=community.general.chroot ansible_host={root}\n")
    t = time.time()
    # Modules run inside the root with this environment: point TLS clients (pip) at the host's CA bundle, copied
    # into the root, so that a TLS-intercepting proxy on this machine is trusted there too.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_ROLES_PATH=str(ROOT / "ansible" / "roles"), PIP_CERT=HOST_CA, SSL_CERT_FILE=HOST_CA,
               REQUESTS_CA_BUNDLE=HOST_CA, PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([str(ANSIBLE), "-i", str(inv), str(book),
                        "-e", f"@{ROOT / 'ansible' / 'group_vars' / 'vault.example.yml'}",
                        "-e", json.dumps({**EXTRA_VARS, **(extra or {})})],
                       cwd=ROOT / "ansible", capture_output=True, text=True, env=env)
    try:
        doc = json.loads(r.stdout[r.stdout.index("{"):])
    except ValueError:
        doc = {}
    if r.returncode != 0:
        print(json.dumps(failures(doc), indent=1)[-6000:] if doc else r.stdout[-6000:], r.stderr[-3000:],
              file=sys.stderr)
        raise SystemExit(f"ansible-playbook {book.name} failed ({r.returncode})")
    return doc, time.time() - t


def results(doc: dict):
    """(role: task name, host, result) for every task result in a json-callback document."""
    for play in doc.get("plays", []):
        for task in play["tasks"]:
            path = task["task"].get("path", "")
            role = path.split("/roles/", 1)[1].split("/", 1)[0] if "/roles/" in path else "play"
            name = task["task"]["name"].split(" : ", 1)[-1]  # include_role prefixes "role : "
            for host, res in task["hosts"].items():
                yield f"{role}: {name}", host, res


def failures(doc: dict) -> list:
    return [(name, host, res.get("msg"), (res.get("stderr") or "")[-2000:]) for name, host, res in results(doc)
            if res.get("failed") or res.get("unreachable")]


def changed(doc: dict) -> int:
    return sum(s.get("changed", 0) for s in doc.get("stats", {}).values())


def changed_tasks(doc: dict) -> list[str]:
    return sorted({name for name, _, res in results(doc) if res.get("changed")})


def skipped(*docs: dict) -> set[str]:
    """Tasks that no run executed on any host but some run skipped (a loop counts as skipped when all its items
    were). A task that ran once (the password hashing, only when the list changed) counts as run."""
    ran, skip = set(), set()
    for doc in docs:
        for name, _, res in results(doc):
            items = res.get("results") or [res]
            (skip if all(i.get("skipped") for i in items) else ran).add(name)
    return skip - ran


def default_route_address() -> str | None:
    """The host's IPv4 address towards its default route (what ansible_default_ipv4.address is in the root,
    which shares the host's network); None without a default route. Sends nothing (UDP connect)."""
    with open("/proc/net/route") as f:
        if not any(line.split()[1] == "00000000" for line in f.readlines()[1:]):
            return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing decision only, no packet
        return s.getsockname()[0]


def in_root(root: Path, *cmd: str, user: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    spec = [f"--userspec={user}:{user}"] if user else []
    return subprocess.run([CHROOT, *spec, str(root), *cmd], capture_output=True, text=True, cwd="/",
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})})


def verify_units(root: Path) -> list[str]:
    """`systemd-analyze verify` of each unit inside the root; warnings count as problems. The server's gunicorn
    (in the venv this run does not install) is the one tolerated message."""
    problems = []
    for unit in ("edge-agent", "home-energy-server", "mosquitto", "influxdb"):
        r = in_root(root, "systemd-analyze", "verify", "--man=no", f"{unit}.service")
        lines = [ln for ln in (r.stdout + r.stderr).splitlines()
                 if ln.strip() and not (unit == "home-energy-server" and "venv-server/bin/gunicorn" in ln)]
        if lines:
            problems.append(f"systemd-analyze verify {unit}.service: {' | '.join(lines)}")
    return problems


def check_root(root: Path) -> list[str]:
    problems = []

    def exists(p: str) -> None:
        if not (root / p.lstrip("/")).exists():
            problems.append(f"missing {p}")

    def read(p: str) -> str:
        """The file's text; "" when missing (reported by `exists`)."""
        path = root / p.lstrip("/")
        return path.read_text() if path.exists() else ""

    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[2]: line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    users = {fields[2]: name for name, fields in passwd.items()}
    for user in ("edge-agent", "home-energy"):
        if user not in passwd:
            problems.append(f"no user {user}")
    for p in ("/etc/edge-agent/agent.toml", "/etc/edge-agent/api-token", "/etc/mosquitto/conf.d/home-energy.conf",
              "/etc/mosquitto/passwd", "/etc/influxdb/influxdb.conf", "/etc/systemd/system/edge-agent.service",
              "/etc/home-energy-server/server.toml", "/etc/systemd/system/home-energy-server.service",
              "/etc/grafana/provisioning/datasources/home-energy.yaml",
              "/etc/grafana/provisioning/dashboards/home-energy/home-energy-flow.json",
              "/etc/systemd/system/grafana-server.service.d/home-energy.conf",
              "/etc/systemd/journald.conf.d/home-energy.conf",
              "/opt/home-energy/libexec/influxdb1_setup.py",
              "/opt/home-energy/venv-edge/bin/edge-agent", "/opt/home-energy/venv-server/bin/home-energy-server",
              f"/opt/home-energy/venv-server/lib/python{PY}/site-packages/server/gunicorn.conf.py"):
        exists(p)
    problems += check_package(root)
    for unit in ("edge-agent", "home-energy-server", "mosquitto", "influxdb"):
        link = root / f"etc/systemd/system/multi-user.target.wants/{unit}.service"
        # an enabled unit is a symlink whose (absolute) target exists inside the root, not on this host
        if not link.is_symlink() or not (root / os.readlink(link).lstrip("/")).exists():
            problems.append(f"unit {unit} not enabled")
    for p, (mode, owner, group) in MODES.items():
        path = root / p.lstrip("/")
        if not path.exists():
            problems.append(f"missing {p}")
            continue
        st = path.stat()
        got = (st.st_mode & 0o777, users.get(str(st.st_uid)), groups.get(str(st.st_gid)))
        if got != (mode, owner, group):
            problems.append(f"{p}: {oct(got[0])} {got[1]}:{got[2]}, expected {oct(mode)} {owner}:{group}")
    broker_conf = read("/etc/mosquitto/conf.d/home-energy.conf")
    if "max_queued_messages 0" not in broker_conf:
        problems.append("mosquitto max_queued_messages not raised")
    if "max_packet_size 1048576" not in broker_conf:
        problems.append("mosquitto max_packet_size not set")
    if "tensorflow" in " ".join(os.listdir(root / f"opt/home-energy/venv-edge/lib/python{PY}/site-packages")).lower():
        problems.append("TensorFlow in the edge venv")
    agent = tomllib.loads(read("/etc/edge-agent/agent.toml"))
    want_bind = default_route_address() or "127.0.0.1"
    if agent.get("api", {}).get("bind") != want_bind:
        problems.append(f"[api] bind {agent.get('api', {}).get('bind')!r}, expected the default-route address "
                        f"{want_bind!r}")
    if agent.get("forecast", {}).get("timezone") != "Europe/Berlin" or "holidays" in agent.get("forecast", {}):
        problems.append(f"[forecast] not in the dashboards' timezone without holidays: {agent.get('forecast')}")
    storage = agent.get("storage", {})
    if storage.get("version") != 1 or storage.get("create_database") is not False:
        problems.append(f"[storage] not the 1.x default with create_database = false: {storage}")
    if "EnvironmentFile=/etc/default/grafana-server-home-energy" not in read(
            "/etc/systemd/system/grafana-server.service.d/home-energy.conf"):
        problems.append("the grafana drop-in does not hand over the credentials file")
    env = read("/etc/default/grafana-server-home-energy")
    if "INFLUXDB_USER=reader\n" not in env or "INFLUXDB_TOKEN" in env:
        problems.append("grafana's environment file does not hold the 1.x reader's credentials only")
    # the unit's ExecStartPre: the venv's console script, no PYTHONPATH, run as the agent's user
    r = in_root(root, "/opt/home-energy/venv-edge/bin/edge-agent", "check", "--offline",
                "--config", "/etc/edge-agent/agent.toml", user="edge-agent")
    if r.returncode != 0:
        problems.append(f"agent config check failed: {r.stdout} {r.stderr}")
    return problems + verify_units(root)


def check_package(root: Path) -> list[str]:
    """The package installed from the wheel the controller built: no copied tree, the wheel in dist/, both venvs
    import it from their site-packages, the units name what exists; the server's skipped dependencies stood in for
    by its extra's metadata and Flask (enough for `home-energy-server hash-password`)."""
    problems = []
    if (root / "opt/home-energy/app").exists():
        problems.append("/opt/home-energy/app (a copied source tree) is still there")
    wheels = sorted((root / "opt/home-energy/dist").glob("*.whl"))
    if len(wheels) != 1 or wheels[0].stat().st_mode & 0o777 != 0o644 or wheels[0].stat().st_uid != 0:
        problems.append(f"/opt/home-energy/dist: expected one wheel, 0644 root: {[w.name for w in wheels]}")
    for venv, user in (("venv-edge", "edge-agent"), ("venv-server", "home-energy")):
        r = in_root(root, f"/opt/home-energy/{venv}/bin/python", "-c",
                    "from importlib.util import find_spec as f; "
                    "print(*(f(p).origin for p in ('edge_agent', 'shared', 'server', 'training')))", user=user)
        site = f"/opt/home-energy/{venv}/lib/python{PY}/site-packages/"
        if r.returncode != 0 or not all(o.startswith(site) for o in r.stdout.split()):
            problems.append(f"{venv} does not import the package from its site-packages: {r.stdout} {r.stderr}")
    r = in_root(root, "/opt/home-energy/venv-edge/bin/edge-agent", "--version", user="edge-agent")
    if r.returncode != 0:
        problems.append(f"edge-agent --version failed: {r.stderr}")
    unit = (root / "etc/systemd/system/home-energy-server.service").read_text()
    conf = next((w for line in unit.splitlines() if line.startswith("ExecStart=")
                 for w in line.split() if w.endswith("gunicorn.conf.py")), "")
    if not conf or not (root / conf.lstrip("/")).is_file():
        problems.append(f"the server unit's gunicorn settings {conf!r} are not in the root")
    if "PYTHONPATH" in "".join(line for line in unit.splitlines() + (root / "etc/systemd/system/edge-agent.service")
                               .read_text().splitlines() if not line.startswith("#")):
        problems.append("a unit still sets PYTHONPATH")
    # the server's dependencies (skipped: TensorFlow) are the [server] extra's: its metadata names them
    r = in_root(root, "/opt/home-energy/venv-server/bin/python", "-c",
                "from importlib.metadata import requires; "
                "print(' '.join(r for r in requires('home-energy') if 'extra == \"server\"' in r))")
    if not all(dep in r.stdout for dep in ("flask", "gunicorn", "tensorflow")):
        problems.append(f"the installed package's [server] extra lacks flask/gunicorn/tensorflow: {r.stdout} "
                        f"{r.stderr}")
    flask = next(line.strip() for line in (ROOT / "requirements/server.txt").read_text().splitlines()
                 if line.lower().startswith("flask"))
    r = in_root(root, "/opt/home-energy/venv-server/bin/python", "-m", "pip", "install", "--quiet",
                "--disable-pip-version-check", flask, env={"PIP_CERT": HOST_CA, "SSL_CERT_FILE": HOST_CA})
    if r.returncode != 0:
        problems.append(f"pip install {flask} in the server venv failed: {r.stderr[-2000:]}")
    r = in_root(root, "/opt/home-energy/venv-server/bin/home-energy-server", "hash-password", "--password",
                "stand-in", user="home-energy")
    if r.returncode != 0 or not r.stdout.startswith(("scrypt:", "pbkdf2:")):
        problems.append(f"home-energy-server hash-password failed: {r.stdout} {r.stderr}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="keep the provisioned root in this (new) directory")
    args = parser.parse_args()
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
        site = ROOT / "ansible" / "site.yml"
        # The build runs on this machine, not in the root: its TLS settings, not the root's (PIP_CERT above).
        wheels = {"home_energy_wheel_dir": str(work / "wheel"), "home_energy_wheel_environment": {
            k: "/etc/ssl/certs/ca-certificates.crt" for k in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")}}
        out1, t1 = playbook(root, work, site, wheels)
        # the controller's wheel gone (a clean checkout): rebuilt, it must be the same bytes, so nothing changes
        shutil.rmtree(work / "wheel")
        out2, t2 = playbook(root, work, site, wheels)
        # The server's key-pair task, which site.yml skips without the server venv: the edge venv has cryptography.
        keypair = work / "keypair.yml"
        keypair.write_text(f"""---
- name: Key pair task of the server role
  hosts: workstation
  become: true
  vars_files: ["{ROOT / 'ansible' / 'group_vars' / 'all.yml'}"]
  tasks:
    - name: The role's task file
      ansible.builtin.include_role:
        name: server
        tasks_from: keypair.yml
""")
        out3, _ = playbook(root, work, keypair, {"server_venv": "/opt/home-energy/venv-edge"})
        problems = check_root(root)
        for n, doc in (("first", out1), ("second", out2)):
            built = [json.loads(res["stdout"])["built"] for name, _, res in results(doc)
                     if name.startswith("home_energy_package: Build the wheel") and res.get("stdout")]
            if True not in built:
                problems.append(f"the {n} run did not build the wheel (it was deleted before): {built}")
        if "server: Signing key pair (generated once; the private key stays 0600 with the server user)" \
                not in changed_tasks(out3):
            problems.append(f"the key-pair task did not run: {changed_tasks(out3)}")
        skip = skipped(out1, out2)
        problems += [f"task skipped in the chroot with no check standing in for it: {t!r}" for t in sorted(skip - set(SKIPPED))]
        problems += [f"SKIPPED lists a task the chroot run did not skip: {t!r}" for t in sorted(set(SKIPPED) - skip)]
        result = {"root_seconds": round(boot, 1), "first_run_seconds": round(t1, 1), "first_run_changed": changed(out1),
                  "second_run_seconds": round(t2, 1), "second_run_changed": changed(out2),
                  "skipped_with_checks": len(skip & set(SKIPPED)), "problems": problems}
        if changed(out2):
            print("changed on the second run:", changed_tasks(out2), file=sys.stderr)
        print(json.dumps(result))
        return 0 if not problems and changed(out2) == 0 else 1
    finally:
        for m in mounted:
            subprocess.run(["umount", "-l", str(m)], check=False)
        if args.keep:
            shutil.move(str(root), str(args.keep))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
