"""The active models: one owner of what is stored and what is loaded, shared by the forecast loop and the API.

The first release had two: the model API built a Forecaster of its own to reload models, so an upload and a
forecast could each hold a different idea of what was active. Now the API changes the store through this object
and the forecast loop reads `loaded()` from it, under one lock.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from edge_agent.models.store import ModelStore, StoredVersion
from edge_agent.runtime.health import Health
from shared.inference import LoadedModel
from shared.interpreter import Runtime, runtime

log = logging.getLogger(__name__)


class ActiveModels:
    def __init__(self, root: Path, health: Health, rt: Runtime | None = None):
        self.store = ModelStore(root)
        self.runtime = rt or runtime()
        self.health = health
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedModel] = {}
        for name in self.store.names():
            self.reload(name)

    def loaded(self) -> dict[str, LoadedModel]:
        """A snapshot of the loaded models by bundle name."""
        with self._lock:
            return dict(self._loaded)

    def reload(self, name: str) -> bool:
        """Load the store's active version of `name`; False (the version in memory stays) if it does not load."""
        entry = self.store.active(name)
        if entry is None:
            with self._lock:
                self._loaded.pop(name, None)
            return True
        try:
            doc, data = self.store.files(entry)
            model = LoadedModel(doc, data, self.runtime)
        except Exception as exc:
            log.error("cannot load %s %s: %s", name, entry.version, exc)
            self.health.incr("model_load_errors")
            return False
        with self._lock:
            self._loaded[name] = model
        log.info("model %s version %s active (%s)", name, entry.version, self.runtime)
        return True

    def holds(self, entry: StoredVersion) -> bool:
        """Exactly this stored version is the one in memory."""
        with self._lock:
            model = self._loaded.get(entry.name)
        return model is not None and model.manifest.get("version") == entry.version \
            and model.manifest["model"]["sha256"] == entry.sha256

    def history_slots(self, at_least: int) -> int:
        """How many slots up to the issue time the loaded models read (at least `at_least`)."""
        return max([m.spec.history_slots for m in self.loaded().values()] + [at_least])
