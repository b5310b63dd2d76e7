"""The layering contract (pyproject.toml, [tool.importlinter]) holds, and the check would catch a break.

edge_agent → shared; training → shared; server → training, shared; nothing imports server, tests or tools.
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


def test_a_workstation_import_of_the_edge_is_caught(tmp_path):
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("*.pyc", "__pycache__", "*.json",
                                                                                  "*.tflite", "*.csv"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "server" / "nodes.py", "a") as f:
        f.write("\nfrom edge_agent.ingest import Ingest  # noqa: the break the contract must catch\n")
    r = lint(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout, r.stdout
