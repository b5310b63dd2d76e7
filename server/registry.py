"""Model registry: bundle files under data_dir/registry/<name>/<version>/ (signed) + the SQLite index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from server.db import Database
from server.files import private_dir
from server.plots import forecast_vs_actual_svg
from shared import manifest as mf
from shared import signing
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries, parse_time_ns


class Registry:
    def __init__(self, root: Path, db: Database, keys: signing.KeyPair):
        self.root = private_dir(Path(root))
        self.db = db
        self.keys = keys

    def add(self, bundle_dir: Path, series: SlotSeries | None = None, job_id: int | None = None) -> dict:
        """Copy a bundle in, sign it, index it; returns the version row."""
        doc = mf.load(bundle_dir)
        if mf.sha256_file(Path(bundle_dir) / mf.MODEL_FILE) != doc["model"]["sha256"]:
            raise ValueError(f"{bundle_dir}: model.tflite does not match its manifest")
        dest = private_dir(self.root / doc["name"]) / doc["version"]
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(mode=0o700)
        for f in (mf.MANIFEST_FILE, mf.MODEL_FILE):
            shutil.copyfile(Path(bundle_dir) / f, dest / f)
        signing.sign_bundle_dir(dest, self.keys)
        for f in dest.iterdir():
            f.chmod(0o600)
        plot = self._plot(dest, doc, series) if series is not None else None
        self.db.add_version(doc, dest, plot, job_id)
        return self.get(doc["name"], doc["version"])

    def _plot(self, path: Path, doc: dict, series: SlotSeries) -> str | None:
        """Forecast vs actual at the end of the validation part, through the inference code the edge runs."""
        from shared.inference import LoadedModel

        model = LoadedModel.from_dir(path)
        end = parse_time_ns(doc["data"]["end"]) - doc["horizon_steps"] * SLOT_NS
        h = doc["horizon_steps"]
        if h == 1:
            issues = np.arange(end - 2 * SLOTS_PER_DAY * SLOT_NS, end, SLOT_NS)
            fc = [model.predict(series, int(t)) for t in issues]
            forecast = np.array([f.values[0] if f.complete else np.nan for f in fc])
            actual = np.array([series.window(int(t) + SLOT_NS, 1)[0] for t in issues])
        else:
            day = SLOTS_PER_DAY * SLOT_NS
            issue = (end - day) // day * day
            f = model.predict(series, int(issue))
            forecast = f.values if f.complete else np.full(h, np.nan)
            actual = series.window(int(issue) + h * SLOT_NS, h)
        return forecast_vs_actual_svg(actual, forecast, f"{doc['name']} {doc['version']} (validation)")

    def get(self, name: str, version: str) -> dict | None:
        row = self.db.version(name, version)
        return self._decode(row) if row else None

    def list(self, limit: int = 200) -> list[dict]:
        return [self._decode(r) for r in self.db.versions(limit)]

    @staticmethod
    def _decode(row: dict) -> dict:
        row = dict(row)
        for k in ("metrics", "data"):
            if isinstance(row.get(k), str):
                row[k] = json.loads(row[k])
        return row
