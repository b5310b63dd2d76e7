"""The hosts install the package from one wheel (role home_energy_package), not from copied source trees.

The role runs here with ansible (connection local) on a copy of the package's sources, into a venv in a temp
dir: the first run installs, a second changes nothing, a wheel rebuilt from the same sources is the same wheel
(changed=0), a changed file with an unchanged version is installed (pip alone would skip it) and restarts the
service, so is an edited file in the venv, and the old copied tree goes. Then the server's unit command line (the venv's gunicorn with the installed
package's settings, no PYTHONPATH, working directory /) serves the login page from the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import psutil
import pytest

from tests.deploy.ansible_local import AVAILABLE, ROLES, SKIP_REASON, changed, play, task_results
from tools.services import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROLES / "home_energy_package" / "files" / "build_wheel.py"
PACKAGE_FILES = ("pyproject.toml", "README.md", "requirements", "edge_agent", "shared", "server", "training")
RESTART = "Restart the service (stand-in)"
INSTALL = "The package from the wheel (when it differs from the installed one)"


def copy_sources(dest: Path) -> Path:
    """The package's files as a plain directory (no git): the builder's fallback listing and mtime epoch."""
    dest.mkdir(parents=True)
    for name in PACKAGE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def build(src: Path, out: Path) -> dict:
    """build_wheel.py with this interpreter's setuptools (no package index: tests stay on loopback)."""
    r = subprocess.run([sys.executable, str(BUILD), "--src", str(src), "--out", str(out), "--build-isolation",
                        "false"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_wheel_is_reproducible_and_holds_what_the_hosts_run(tmp_path):
    src = copy_sources(tmp_path / "src")
    first = build(src, tmp_path / "a")
    assert first["built"] and build(src, tmp_path / "a") == {**first, "built": False}  # reused, not rebuilt
    assert build(src, tmp_path / "b")["sha256"] == first["sha256"]  # rebuilt from scratch: the same bytes
    # setuptools' in-tree build/ (stale modules) is not what the wheel is made from
    (src / "build" / "lib" / "edge_agent").mkdir(parents=True)
    (src / "build" / "lib" / "edge_agent" / "stale.py").write_text("deleted = True\n")
    assert build(src, tmp_path / "c")["sha256"] == first["sha256"]

    with zipfile.ZipFile(first["path"]) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(info).decode()
        scripts = whl.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert {"edge-agent = edge_agent.cli:main", "home-energy-server = server.__main__:main",
            "home-energy-train = training.cli:main"} <= set(scripts.splitlines())
    for needed in ("server/gunicorn.conf.py", "server/templates/index.html", "server/static/app.js",
                   "edge_agent/grafana/provisioning/dashboards/home-energy.yaml", "shared/signing.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "tools/", "build/")) or "stale" in n]
    edge = [line for line in metadata.splitlines() if line.endswith('extra == "edge"')]
    server = " ".join(line for line in metadata.splitlines() if line.endswith('extra == "server"'))
    assert edge and not [line for line in edge if "tensorflow" in line.lower()]
    assert all(dep in server for dep in ("flask", "gunicorn", "tensorflow"))

    # a changed source file makes another wheel
    (src / "shared" / "__init__.py").write_text((src / "shared" / "__init__.py").read_text() + "\nCHANGED = 1\n")
    again = build(src, tmp_path / "a")
    assert again["built"] and again["sha256"] != first["sha256"]


def provision(tmp: Path, src: Path, run: str) -> dict:
    """The role as edge_agent and server include it, with a stand-in restart handler; the wheel is built with this
    interpreter's setuptools (no index)."""
    return play(tmp / run, [{"name": "The package", "ansible.builtin.include_role": {"name": "home_energy_package"},
                             "vars": {"home_energy_package_venv": str(tmp / "opt" / "venv")}}],
                {"home_energy_src": str(src), "home_energy_prefix": str(tmp / "opt"),
                 "home_energy_wheel_dir": str(tmp / "wheels"), "home_energy_wheel_python": sys.executable,
                 "home_energy_wheel_build_isolation": False},
                handlers=[{"name": RESTART, "ansible.builtin.debug": {"msg": "restart"},
                           "listen": "home-energy package installed"}])


def installed(venv: Path, code: str) -> str:
    """Run code with the venv's python from / with no PYTHONPATH: only the installed package can answer."""
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd="/",
                       env={"PATH": os.environ["PATH"]}, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.skipif(os.geteuid() != 0, reason="the role installs root-owned files (dist/ 0755 root, the wheel 0644)")
def test_role_installs_the_wheel_reinstalls_changed_content_and_is_idempotent(tmp_path):
    src = copy_sources(tmp_path / "src")
    venv, opt = tmp_path / "opt" / "venv", tmp_path / "opt"
    (opt / "app" / "edge_agent").mkdir(parents=True)  # the layout before the package: a copied tree
    (opt / "app" / "edge_agent" / "agent.py").write_text("")

    first = provision(tmp_path, src, "1")
    assert changed(first) > 0 and RESTART in task_results(first)
    assert not (opt / "app").exists()
    purelib = installed(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    origins = installed(venv, "from importlib.util import find_spec as f; "
                              "print(*(f(p).origin for p in ('edge_agent', 'shared', 'server', 'training')))")
    assert all(o.startswith(purelib) for o in origins.split()), origins
    for script in ("edge-agent", "home-energy-server", "home-energy-train"):
        assert (venv / "bin" / script).exists(), script
    r = subprocess.run([str(venv / "bin" / "edge-agent"), "--version"], capture_output=True, text=True, cwd="/",
                       env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    wheels = sorted(p.name for p in (opt / "dist").iterdir())
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl")

    second = provision(tmp_path, src, "2")
    assert changed(second) == 0 and RESTART not in task_results(second)

    # the controller's wheel gone (a clean checkout, `make clean`): rebuilt, the same bytes, nothing changes
    shutil.rmtree(tmp_path / "wheels")
    rebuilt = provision(tmp_path, src, "3")
    build_result = task_results(rebuilt)["Build the wheel on the controller (reused while the package's files are "
                                         "unchanged)"]
    assert json.loads(build_result["stdout"])["built"] is True
    assert changed(rebuilt) == 0, [n for n, r in task_results(rebuilt).items() if r.get("changed")]

    # new content, same version: pip alone says "already installed"; the role reinstalls and restarts
    init = src / "shared" / "__init__.py"
    init.write_text(init.read_text() + "\nDEPLOYED_MARK = 'second build'\n")
    upgraded = provision(tmp_path, src, "4")
    assert task_results(upgraded)[INSTALL].get("changed") and RESTART in task_results(upgraded)
    assert installed(venv, "import shared; print(shared.DEPLOYED_MARK)") == "second build"
    assert changed(provision(tmp_path, src, "5")) == 0
    # the installed files are compared, not a recorded hash: an edit in the venv is put right
    edited = Path(purelib) / "shared" / "__init__.py"
    edited.write_text(edited.read_text() + "\nLOCAL_EDIT = 1\n")
    assert task_results(provision(tmp_path, src, "5b"))[INSTALL].get("changed")
    assert "LOCAL_EDIT" not in edited.read_text()

    # a new version: its wheel replaces the old one on the host
    pyproject = src / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.2.0"', 'version = "0.2.1"', 1))
    provision(tmp_path, src, "6")
    assert [p.name for p in (opt / "dist").iterdir()] == ["home_energy-0.2.1-py3-none-any.whl"]
    assert installed(venv, "from importlib.metadata import version; print(version('home-energy'))") == "0.2.1"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except OSError:
        return 0


@pytest.mark.timeout(300)
def test_server_unit_command_serves_from_the_installed_package(tmp_path):
    """What the server unit runs — `<venv>/bin/gunicorn -c <site-packages>/server/gunicorn.conf.py server.wsgi:app`
    in / without PYTHONPATH — with the package installed from its wheel; the dependencies come from this test
    environment (a .pth file), the package only from the wheel."""
    from werkzeug.security import generate_password_hash

    wheel = build(copy_sources(tmp_path / "src"), tmp_path / "wheels")["path"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", wheel], check=True, capture_output=True)
    purelib = Path(installed(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "flask").is_dir())
    (purelib / "test-deps.pth").write_text(f"{deps}\n")
    assert installed(venv, "import server; print(server.__file__)").startswith(str(purelib))

    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{data}"\nadmin_password_hash = "{generate_password_hash("x")}"\n'
                      f'api_token = "{"t" * 32}"\nsession_cookie_secure = false\n')
    env = {"PATH": os.environ["PATH"], "SERVER_CONFIG": str(config), "SERVER_BIND": f"127.0.0.1:{port}",
           "SERVER_WORKERS": "1", "HOME": str(tmp_path)}
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "gunicorn", "-c",
                             str(purelib / "server" / "gunicorn.conf.py"), "server.wsgi:app"],
                            cwd="/", env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and _get(f"http://127.0.0.1:{port}/login") != 200:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            time.sleep(0.5)
        assert _get(f"http://127.0.0.1:{port}/login") == 200, (tmp_path / "gunicorn.log").read_text()[-3000:]
        # the job worker (`python -m server worker`, started by the settings' when_ready) runs from the venv too
        while time.time() < deadline and "job worker started" not in (tmp_path / "gunicorn.log").read_text():
            time.sleep(0.5)
        assert "job worker started" in (tmp_path / "gunicorn.log").read_text()
        time.sleep(3)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if c.cmdline()[-3:] == ["-m", "server", "worker"]]
        assert workers and workers[0].is_running() and workers[0].status() != psutil.STATUS_ZOMBIE
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


def _builder():
    """build_wheel.py as a module: its package_paths() is what setuptools reads (from pyproject.toml)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_wheel", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dockerfile_stages(path: Path) -> list[list[str]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    stages: list[list[str]] = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def covered(path: str, roots: set[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


@pytest.mark.parametrize("dockerfile, extra", [("edge_agent/Dockerfile", "edge"), ("server/Dockerfile", "server")])
def test_images_install_the_wheel_with_their_extra(dockerfile, extra):
    """No Docker engine runs here: the Dockerfiles are checked against what the build needs. The wheel stage copies
    every file setuptools reads (a package added to pyproject.toml but not copied would be missing from the image),
    .dockerignore lets them into the build context, and the image installs `<wheel>[extra]` with no source tree and
    no PYTHONPATH."""
    needed = _builder().package_paths(ROOT)
    build_stage, image = dockerfile_stages(ROOT / dockerfile)
    copied = {word.rstrip("/") for line in build_stage if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert not [p for p in needed if not covered(p, copied)]
    assert any(line.startswith("RUN pip wheel") and "--no-deps" in line for line in build_stage)
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore[ignore.index("*") + 1:] if line.startswith("!")}
    assert not [p for p in needed if not covered(p, allowed)]
    assert [line for line in image if line.startswith("COPY ")] == ["COPY --from=wheel /dist /tmp/dist"]
    assert any(line.startswith("RUN ") and f'"$w[{extra}]"' in line for line in image)
    assert not [line for line in image if "PYTHONPATH" in line]
