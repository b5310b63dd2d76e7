"""Does the venv hold exactly the package in this wheel? Run with the venv's python by the home_energy_package role.

Usage: venv_state.py WHEEL. Prints one JSON line: {"purelib": the venv's site-packages, "installed": the installed
version or null, "matches": bool, "reason": why not}.

pip skips a wheel whose version is already installed even when its content differs, so the role needs its own
answer. It compares contents, not a recorded hash (Debian 12's pip 23.0 records none for a local wheel): the
files the installed package lists in its RECORD (minus what pip adds: bytecode, scripts, INSTALLER, REQUESTED,
direct_url.json) must be the wheel's, and each file on disk must have the sha256 the wheel's RECORD gives — a
changed, added or removed module, or a local edit in the venv, all count. Standard library only.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

DIST = "home-energy"
ADDED_BY_PIP = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _record(text: str) -> dict[str, str]:
    """RECORD (CSV: path, sha256=<urlsafe base64>, size) -> {path: hash} ("" when the line has none)."""
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if row}


def wheel_record(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1)
        return {p: h for p, h in _record(whl.read(name).decode()).items() if p != name}


def _pip_added(path: str) -> bool:
    parts = path.split("/")
    return (path.startswith("../") or "__pycache__" in parts
            or (len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in ADDED_BY_PIP))


def _sha256(path: Path) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


def compare(wheel: Path, purelib: Path) -> tuple[str | None, bool, str]:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return None, False, "not installed"
    installed = {p for p in _record(dist.read_text("RECORD") or "") if not _pip_added(p)}
    expected = wheel_record(wheel)
    if installed != set(expected):
        diff = sorted(installed ^ set(expected))
        return dist.version, False, f"{len(diff)} file(s) differ in name, e.g. {diff[0]}"
    for path, digest in expected.items():
        target = purelib / path
        if not target.is_file() or _sha256(target) != digest:
            return dist.version, False, f"{path} differs"
    return dist.version, True, ""


def main() -> int:
    purelib = Path(sysconfig.get_paths()["purelib"])
    version, matches, reason = compare(Path(sys.argv[1]), purelib)
    print(json.dumps({"purelib": str(purelib), "installed": version, "matches": matches, "reason": reason}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
