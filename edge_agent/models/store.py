"""On-disk model store with crash-safe, all-or-nothing activation.

Layout under `root`:
    <name>/<version>/manifest.json, model.tflite, signature.json   (immutable once renamed into place)
    <name>/state.json   {"active": {...}, "previous": {...}}       (replaced atomically)

A version directory only ever appears under its name complete: it is written under a temporary name (files
fsynced), read back and compared, then renamed into place; it disappears the same way (renamed to a temporary
name, then removed), so an interrupted removal leaves a temporary directory, never a partial version. A version
directory that exists but differs from the files being activated (left by an older agent, or damaged) is replaced,
not reused. state.json is replaced last (temp file, fsync, rename, directory fsync): a SIGKILL at any point leaves
it naming the old or the new version, both complete. At start, temporary directories and version directories that
state.json does not name are removed. Only the active and the previous version are kept.

The caller (edge_agent/api/component.py) activates without pruning, loads the model, and then either `prune`s or
`restore`s the state it had before: a version that does not load never stays active.
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

from edge_agent.runtime.durable import fsync_dir, make_dirs, replace_file, write_file
from shared import manifest as mf
from shared.signing import SIGNATURE_FILE

FILES = (mf.MANIFEST_FILE, mf.MODEL_FILE, SIGNATURE_FILE)


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: str
    sha256: str
    activated_at: str
    path: Path

    def to_dict(self) -> dict:
        out = {"version": self.version, "sha256": self.sha256, "activated_at": self.activated_at}
        node = self.trained_for()
        if node is not None:
            out["node"] = node
        return out

    def trained_for(self) -> str | None:
        """The node whose history trained this version (the manifest's `data.node`, set by the server's
        training task); None for bundles that do not say."""
        try:
            doc = json.loads((self.path / mf.MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            return None
        data = doc.get("data") if isinstance(doc, dict) else None
        node = data.get("node") if isinstance(data, dict) else None
        return node if isinstance(node, str) else None


class ModelStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        make_dirs(self.root)
        self._lock = threading.Lock()
        for tmp in self.root.glob("*/.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        for tmp in self.root.glob("*/state.json.tmp"):
            tmp.unlink(missing_ok=True)
        for name in self.names():
            self.prune(name)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "state.json").exists())

    def _read_state(self, name: str) -> dict | None:
        try:
            doc = json.loads((self.root / name / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def _state(self, name: str) -> dict:
        return self._read_state(name) or {"active": None, "previous": None}

    def state(self, name: str) -> dict:
        """The raw state (to `restore` it if what follows fails)."""
        with self._lock:
            return self._state(name)

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
        replace_file(self.root / name / "state.json", (json.dumps(state, indent=2) + "\n").encode())

    @staticmethod
    def _holds(path: Path, files: dict[str, bytes]) -> bool:
        try:
            return all((path / n).read_bytes() == data for n, data in files.items())
        except OSError:
            return False

    def _remove(self, path: Path) -> None:
        """Rename out of the way first: an interrupted removal leaves a .tmp- directory, never a partial version."""
        aside = path.parent / f".tmp-{uuid.uuid4().hex}"
        os.rename(path, aside)
        fsync_dir(path.parent)
        shutil.rmtree(aside, ignore_errors=True)

    def _install(self, name: str, version: str, files: dict[str, bytes]) -> Path:
        d = self.root / name
        make_dirs(d)  # its name in the store survives a power cut like the files put into it
        final = d / version
        if final.exists() and self._holds(final, files) and not (set(p.name for p in final.iterdir()) - set(files)):
            return final
        tmp = d / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        for n, data in files.items():
            write_file(tmp / n, data)
        fsync_dir(tmp)
        if not self._holds(tmp, files):
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(f"{name} {version}: the files read back differ from those written")
        if final.exists():  # partial or damaged: never reused
            self._remove(final)
        os.rename(tmp, final)
        fsync_dir(d)
        return final

    def activate(self, name: str, version: str, manifest_bytes: bytes, model_bytes: bytes,
                 signature_bytes: bytes, prune: bool = True) -> StoredVersion:
        """Store the files (verified on disk) and make this version active; the active one becomes previous.
        Activating the active version again rewrites damaged files and keeps the state. With prune=False the
        caller prunes (or restores the old state) once it has loaded the model."""
        files = {mf.MANIFEST_FILE: manifest_bytes, mf.MODEL_FILE: model_bytes, SIGNATURE_FILE: signature_bytes}
        with self._lock:
            self._install(name, version, files)
            state = self._state(name)
            old = state.get("active")
            if old and old["version"] == version and old["sha256"] == mf.sha256_bytes(model_bytes):
                return self._entry(name, old)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            new = {"version": version, "sha256": mf.sha256_bytes(model_bytes), "activated_at": now}
            if old and old["version"] == version:
                old = state.get("previous")
            self._write_state(name, {"active": new, "previous": old})
            if prune:
                self._prune(name)
            return self._entry(name, new)

    def restore(self, name: str, state: dict) -> None:
        """Put back a state read with `state()` (after an activation whose model did not load), then prune."""
        with self._lock:
            self._write_state(name, state)
            self._prune(name)

    def rollback(self, name: str) -> StoredVersion | None:
        """Make the previous version active again (the current one becomes previous). None: nothing to go to.
        Raises ValueError (naming the file) if the previous version's files are damaged; nothing changes then."""
        with self._lock:
            state = self._state(name)
            prev, cur = state.get("previous"), state.get("active")
            if not prev:
                return None
            self.check(self._entry(name, prev))
            prev = {**prev, "activated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            self._write_state(name, {"active": prev, "previous": cur})
            return self._entry(name, prev)

    def prune(self, name: str) -> None:
        with self._lock:
            self._prune(name)

    def _prune(self, name: str) -> None:
        state = self._read_state(name)
        if state is None:  # unreadable: keep everything rather than guess
            return
        keep = {(state.get(k) or {}).get("version") for k in ("active", "previous")}
        for p in (self.root / name).iterdir():
            if p.is_dir() and not p.name.startswith(".tmp-") and p.name not in keep:
                self._remove(p)

    def check(self, entry: StoredVersion) -> None:
        """Raise ValueError naming what is wrong unless the version's files are complete and match its record."""
        for n in FILES:
            if not (entry.path / n).is_file():
                raise ValueError(f"{entry.name} {entry.version}: {n} is missing")
        try:
            doc, data = self.files(entry)
        except (OSError, mf.ManifestError) as exc:
            raise ValueError(f"{entry.name} {entry.version}: {exc}") from None
        sha = mf.sha256_bytes(data)
        if sha != entry.sha256 or sha != doc["model"]["sha256"] or len(data) != doc["model"]["bytes"]:
            raise ValueError(f"{entry.name} {entry.version}: {mf.MODEL_FILE} does not match its recorded sha256")

    def files(self, entry: StoredVersion) -> tuple[dict, bytes]:
        return mf.load(entry.path), (entry.path / mf.MODEL_FILE).read_bytes()
