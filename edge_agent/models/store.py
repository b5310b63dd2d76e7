"""On-disk model store with crash-safe activation.

Layout under `root`:
    <name>/<version>/manifest.json, model.tflite, signature.json   (immutable once renamed into place)
    <name>/state.json   {"active": {...}, "previous": {...}}       (replaced atomically)

Activation writes the version directory under a temporary name (files fsynced), renames it into place, then
replaces state.json (temp file, fsync, rename, fsync of the directory). A SIGKILL at any point leaves
state.json naming either the old or the new version, both complete on disk. Leftover temporary directories
are removed at start. Only the active and the previous version are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.durable import fsync_dir, write_file
from shared import manifest as mf
from shared.signing import SIGNATURE_FILE


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: str
    sha256: str
    activated_at: str
    path: Path

    def to_dict(self) -> dict:
        return {"version": self.version, "sha256": self.sha256, "activated_at": self.activated_at}


class ModelStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for tmp in self.root.glob("*/.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        for tmp in self.root.glob("*/state.json.tmp"):
            tmp.unlink(missing_ok=True)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "state.json").exists())

    def _state(self, name: str) -> dict:
        try:
            return json.loads((self.root / name / "state.json").read_text())
        except (OSError, ValueError):
            return {"active": None, "previous": None}

    def _entry(self, name: str, doc: dict | None) -> StoredVersion | None:
        if not doc:
            return None
        return StoredVersion(name, doc["version"], doc["sha256"], doc["activated_at"],
                             self.root / name / doc["version"])

    def active(self, name: str) -> StoredVersion | None:
        return self._entry(name, self._state(name).get("active"))

    def previous(self, name: str) -> StoredVersion | None:
        return self._entry(name, self._state(name).get("previous"))

    def status(self) -> dict[str, dict]:
        out = {}
        for name in self.names():
            a, p = self.active(name), self.previous(name)
            out[name] = {"active": a.to_dict() if a else None, "previous": p.to_dict() if p else None}
        return out

    def _write_state(self, name: str, state: dict) -> None:
        d = self.root / name
        tmp = d / "state.json.tmp"
        write_file(tmp, (json.dumps(state, indent=2) + "\n").encode())
        os.replace(tmp, d / "state.json")
        fsync_dir(d)

    def activate(self, name: str, version: str, manifest_bytes: bytes, model_bytes: bytes,
                 signature_bytes: bytes) -> StoredVersion:
        """Store the files and make this version active; the active one becomes previous."""
        with self._lock:
            d = self.root / name
            d.mkdir(parents=True, exist_ok=True)
            final = d / version
            if not final.exists():
                tmp = d / f".tmp-{uuid.uuid4().hex}"
                tmp.mkdir()
                write_file(tmp / mf.MANIFEST_FILE, manifest_bytes)
                write_file(tmp / mf.MODEL_FILE, model_bytes)
                write_file(tmp / SIGNATURE_FILE, signature_bytes)
                fsync_dir(tmp)
                os.rename(tmp, final)
                fsync_dir(d)
            state = self._state(name)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            new = {"version": version, "sha256": mf.sha256_bytes(model_bytes), "activated_at": now}
            old = state.get("active")
            if old and old["version"] == version:
                return self._entry(name, old)
            self._write_state(name, {"active": new, "previous": old})
            self._prune(name, {version, old["version"] if old else None})
            return self._entry(name, new)

    def rollback(self, name: str) -> StoredVersion | None:
        """Make the previous version active again (the current one becomes previous). None: nothing to go to."""
        with self._lock:
            state = self._state(name)
            prev, cur = state.get("previous"), state.get("active")
            if not prev:
                return None
            prev = {**prev, "activated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            self._write_state(name, {"active": prev, "previous": cur})
            return self._entry(name, prev)

    def _prune(self, name: str, keep: set) -> None:
        for p in (self.root / name).iterdir():
            if p.is_dir() and not p.name.startswith(".tmp-") and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def files(self, entry: StoredVersion) -> tuple[dict, bytes]:
        return mf.load(entry.path), (entry.path / mf.MODEL_FILE).read_bytes()
