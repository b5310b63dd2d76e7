"""The layering contract (pyproject.toml, [tool.importlinter]) holds, and the check would catch a break.

edge_agent → shared; training → shared; server → training, shared; nothing imports server, tests or tools.
Inside edge_agent: the process, the components, publish, the component contract, models/storage, the runtime, the
config, each importing only those below it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_agent", "shared", "server", "training", "tests", "tools")


def lint(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_contracts_are_kept():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """The packages and the contracts in tmp_path, with `line` appended to `module` (a path under the root)."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("*.pyc", "__pycache__", "*.json",
                                                                                  "*.tflite", "*.csv"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{line}  # noqa: the break the contract must catch\n")
    return tmp_path


def test_a_workstation_import_of_the_edge_is_caught(tmp_path):
    r = lint(copy_with(tmp_path, "server/nodes.py", "from edge_agent.ingest import Ingest"))
    assert r.returncode != 0 and "BROKEN" in r.stdout, r.stdout


def test_an_upward_import_inside_the_edge_is_caught(tmp_path):
    """The edge's own layers: the runtime importing a component (the circle issue 27 removed) breaks them."""
    r = lint(copy_with(tmp_path, "edge_agent/runtime/health.py", "from edge_agent.ingest import Ingest"))
    assert r.returncode != 0 and "edge agent's own layers" in r.stdout and "BROKEN" in r.stdout, r.stdout
