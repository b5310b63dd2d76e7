"""What an edge backup and a server backup share: a folder of files with a manifest of their sha256, written last,
so that a folder is restored only when it is complete and undamaged (edge_agent/backup.py, server/backup.py)."""

from __future__ import annotations

import json
from pathlib import Path

from shared.digest import sha256_file

MANIFEST = "manifest.json"


def file_hashes(root: Path) -> dict[str, str]:
    """Every file below `root` but the manifest, by its path relative to `root`."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def verify_folder(folder: Path, kind: str, what: str) -> dict:
    """The manifest, after checking that it is a backup of `kind` and every file it lists is there with its
    sha256 (ValueError naming the folder and the file otherwise); `what` names the kind for people."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: no readable {MANIFEST} ({exc}): not a complete backup") from None
    if manifest.get("kind") != kind:
        raise ValueError(f"{folder}: not {what}")
    for rel, sha in manifest["files"].items():
        p = folder / rel
        if not p.is_file() or sha256_file(p) != sha:
            raise ValueError(f"{folder}: {rel} is missing or damaged (sha256 differs)")
    return manifest
