#!/usr/bin/env python3
"""Build the home-energy wheel on the Ansible controller, reproducibly, from the files setuptools reads.

The hosts install this one wheel (`[edge]` on the Pi, `[server]` on the workstation) instead of copied source
trees. The same sources must give the same bytes: a wheel that differs makes a host reinstall the package and
restart its service, and a second provisioning run must report changed=0. Hence:
- the build runs in a scratch copy of the package's files only (pyproject.toml, its readme and requirement files,
  the package directories): setuptools' in-tree `build/` keeps modules deleted since and would ship them, and a
  change to tests/ or docs/ must not make a new wheel;
- file modes are normalised (0644, 0755 when executable) and SOURCE_DATE_EPOCH (the zip entries' timestamps) is
  the time of the last commit that touched those files; outside a git checkout, the newest file's mtime;
- a wheel built from the same content (a digest over paths, modes and bytes) is reused without building.

Prints one JSON line: {"path", "name", "sha256", "built", "digest"}. Exits non-zero with the reason on stderr.
Standard library only; `pip wheel` does the build (with build isolation it fetches setuptools from the index).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ZIP_EPOCH_MIN = 315532800  # 1980-01-01: zip timestamps cannot be older
SKIP_PARTS = {"__pycache__", ".git"}
SKIP_SUFFIXES = (".pyc", ".pyo")
STAMP = "SOURCE_DIGEST"


class BuildError(Exception):
    """Why no wheel could be built (the message names the file or the command)."""


def package_paths(src: Path) -> list[str]:
    """What setuptools reads, from pyproject.toml: itself, the readme, the files of dynamic metadata, the
    top-level package directories of `[tool.setuptools.packages.find] include`."""
    try:
        project = tomllib.loads((src / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{src / 'pyproject.toml'}: {exc}") from exc
    paths = {"pyproject.toml"}
    readme = project.get("project", {}).get("readme")
    if isinstance(readme, str):
        paths.add(readme)
    elif isinstance(readme, dict) and "file" in readme:
        paths.add(readme["file"])
    setuptools = project.get("tool", {}).get("setuptools", {})
    for entry in _walk_values(setuptools.get("dynamic", {})):
        if isinstance(entry, dict) and "file" in entry:
            files = entry["file"]
            paths.update([files] if isinstance(files, str) else files)
    include = setuptools.get("packages", {}).get("find", {}).get("include", [])
    if not include:
        raise BuildError(f"{src / 'pyproject.toml'}: no [tool.setuptools.packages.find] include list")
    paths.update(pattern.split(".")[0].rstrip("*") for pattern in include)
    return sorted(p for p in paths if (src / p).exists())


def _walk_values(table):
    if isinstance(table, dict):
        yield table
        for value in table.values():
            yield from _walk_values(value)


def _git(src: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def source_files(src: Path, paths: list[str]) -> list[str]:
    """Relative paths of the files to build from: in a git checkout the tracked and the untracked, not ignored
    ones (what is there, committed or not); elsewhere every file under `paths` but caches."""
    listed = _git(src, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths)
    if listed is not None:
        names = [n for n in listed.split("\0") if n]
    else:
        names = []
        for p in paths:
            top = src / p
            if top.is_file():
                names.append(p)
                continue
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if d not in SKIP_PARTS and not d.endswith(".egg-info")]
                names += [str(Path(dirpath, f).relative_to(src)) for f in filenames]
    return sorted({n for n in names if (src / n).is_file() and not SKIP_PARTS & set(Path(n).parts)
                   and not n.endswith(SKIP_SUFFIXES)})


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def digest(src: Path, files: list[str]) -> str:
    h = hashlib.sha256()
    for name in files:
        path = src / name
        h.update(f"{name}\0{_mode(path):o}\0{path.stat().st_size}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def source_date_epoch(src: Path, paths: list[str], files: list[str]) -> int:
    """The last commit touching the package's files; the newest mtime outside git (or with no commit)."""
    last = (_git(src, "log", "-1", "--format=%ct", "--", *paths) or "").strip()
    epoch = int(last) if last.isdigit() else int(max((src / f).stat().st_mtime for f in files))
    return max(epoch, ZIP_EPOCH_MIN)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(src: Path, out: Path, python: str, isolation: bool) -> dict:
    paths = package_paths(src)
    files = source_files(src, paths)
    if not files:
        raise BuildError(f"no package files under {src}")
    content = digest(src, files)
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two plays (or two runs) building at once
        stamp = out / STAMP
        if stamp.exists():
            known, _, name = stamp.read_text().strip().partition(" ")
            if known == content and name and (out / name).is_file():
                return _result(out / name, content, built=False)
        with tempfile.TemporaryDirectory(prefix="home-energy-wheel-") as tmp:
            tree, dist = Path(tmp) / "src", Path(tmp) / "dist"
            for name in files:
                target = tree / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, target)
                target.chmod(_mode(src / name))
            env = dict(os.environ, SOURCE_DATE_EPOCH=str(source_date_epoch(src, paths, files)),
                       PYTHONDONTWRITEBYTECODE="1")
            cmd = [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir", "--wheel-dir", str(dist),
                   *([] if isolation else ["--no-build-isolation"]), str(tree)]
            r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            wheels = sorted(dist.glob("*.whl"))
            if r.returncode != 0 or len(wheels) != 1:
                raise BuildError(f"`{' '.join(cmd)}` failed ({r.returncode}): {(r.stderr or r.stdout)[-3000:]}")
            new = out / wheels[0].name
            partial = out / f".{wheels[0].name}.partial"
            shutil.copyfile(wheels[0], partial)
            partial.chmod(0o644)
            os.replace(partial, new)
        for old in out.glob("*.whl"):
            if old != new:
                old.unlink()
        stamp.write_text(f"{content} {new.name}\n")
        return _result(new, content, built=True)


def _result(path: Path, content: str, built: bool) -> dict:
    return {"path": str(path.resolve()), "name": path.name, "sha256": sha256_file(path), "built": built,
            "digest": content}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, required=True, help="the project's checkout (holds pyproject.toml)")
    ap.add_argument("--out", type=Path, required=True, help="where the wheel is kept (reused while unchanged)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter whose pip builds (default: this one)")
    ap.add_argument("--build-isolation", choices=("true", "false"), default="true",
                    help="false: build with the interpreter's own setuptools (no index needed)")
    args = ap.parse_args(argv)
    try:
        result = build(args.src.resolve(), args.out.resolve(), args.python, args.build_isolation == "true")
    except BuildError as exc:
        print(f"build_wheel: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
