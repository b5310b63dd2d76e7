"""Model registry: signed bundle files + the SQLite index, one namespace per owner.

Every version belongs to an owner: the node whose history trained it (`node:<id>`) or a named group
(`group:<name>`, e.g. versions trained on uploaded files). Files live under
data_dir/registry/<node-ID|group-NAME>/<name>/<version>/. A version is unique per owner: two houses trained in the
same second keep both, and a second run of one owner within the same second gets the next free second (the
manifests are rewritten before signing, so the signed version is the registered one).
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from server.db import DEFAULT_GROUP, Database
from server.files import private_dir
from server.plots import forecast_vs_actual
from shared import manifest as mf
from shared import signing
from shared.schema import SLOT_NS, SLOTS_PER_DAY, WEATHER_SUFFIX
from shared.series import SlotSeries, parse_time_ns
from shared.verdict import baseline_words

GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
VERSION_FORMAT = "%Y%m%dT%H%M%SZ"


def node_owner(node_id: int) -> str:
    return f"node:{int(node_id)}"


def group_owner(name: str) -> str:
    if not GROUP_NAME.fullmatch(name):
        raise ValueError(f"group name {name!r}: use 1 to 32 of a-z, 0-9 and '-'")
    return f"group:{name}"


def owner_node_id(owner: str) -> int | None:
    """The node id of a node's owner string, None for a group."""
    return int(owner[5:]) if owner.startswith("node:") else None


def owner_dir(owner: str) -> str:
    kind, _, name = owner.partition(":")
    return f"{kind}-{name}"


def next_free_version(version: str, taken) -> str:
    """`version` or the first later second for which `taken(v)` is false."""
    t = datetime.strptime(version, VERSION_FORMAT).replace(tzinfo=UTC)
    while taken(t.strftime(VERSION_FORMAT)):
        t += timedelta(seconds=1)
    return t.strftime(VERSION_FORMAT)


class Registry:
    def __init__(self, root: Path, db: Database, keys: signing.KeyPair):
        self.root = private_dir(Path(root))
        self.db = db
        self.keys = keys

    def add_run(self, bundle_dirs: list[Path], owner: str, series: SlotSeries | None = None,
                job_id: int | None = None, node_name: str | None = None) -> list[dict]:
        """Register one training run's bundles (they share a version) for `owner`, signed; returns their rows.

        The version is made unique for the owner first. A bundle whose manifest says it was trained for another
        node (`data.node`) than `node_name` is refused: a house's registry holds only its own models."""
        docs = []
        for d in bundle_dirs:
            doc = mf.load(d)
            if mf.sha256_file(Path(d) / mf.MODEL_FILE) != doc["model"]["sha256"]:
                raise ValueError(f"{d}: model.tflite does not match its manifest")
            trained_for = doc.get("data", {}).get("node")
            if node_name is not None and trained_for is not None and trained_for != node_name:
                raise ValueError(f"{doc['name']} {doc['version']} was trained for node {trained_for!r}, "
                                 f"not {node_name!r}")
            docs.append(doc)
        if len({doc["version"] for doc in docs}) > 1:
            raise ValueError("the bundles of one run must share a version")
        version = next_free_version(docs[0]["version"], lambda v: self.db.owner_has_version(owner, v))
        return [self._add(Path(d), doc | {"version": version}, owner, series, job_id)
                for d, doc in zip(bundle_dirs, docs, strict=True)]

    def add(self, bundle_dir: Path, series: SlotSeries | None = None, job_id: int | None = None,
            owner: str = DEFAULT_GROUP) -> dict:
        """One bundle (see add_run)."""
        return self.add_run([Path(bundle_dir)], owner, series, job_id)[0]

    def _add(self, src: Path, doc: dict, owner: str, series: SlotSeries | None, job_id: int | None) -> dict:
        dest = private_dir(private_dir(self.root / owner_dir(owner)) / doc["name"]) / doc["version"]
        if dest.exists():  # files of a run that died before it was indexed
            shutil.rmtree(dest)
        dest.mkdir(mode=0o700)
        shutil.copyfile(src / mf.MODEL_FILE, dest / mf.MODEL_FILE)
        (dest / mf.MANIFEST_FILE).write_bytes(mf.dump(mf.validate(doc)))
        signing.sign_bundle_dir(dest, self.keys)
        for f in dest.iterdir():
            f.chmod(0o600)
        plot = self._plot(dest, doc, series) if series is not None else None
        self.db.add_version(owner, doc, dest, plot, job_id)
        return self.get(owner, doc["name"], doc["version"])

    def _plot(self, path: Path, doc: dict, series: SlotSeries) -> str | None:
        """Forecast vs actual at the end of the validation part, through the inference code the edge runs, with
        the best naive baseline of the validation (the simple guess the model is judged against) and the model's
        P10–P90 band (a bundle with `intervals`)."""
        from shared.baselines import BASELINES
        from shared.inference import LoadedModel

        model = LoadedModel.from_dir(path)
        end = parse_time_ns(doc["data"]["end"]) - doc["horizon_steps"] * SLOT_NS
        h = doc["horizon_steps"]
        bases = (doc.get("metrics", {}).get("validation") or {}).get("baselines") or {}
        best = min(bases, key=lambda b: bases[b].get("mae", np.inf), default=None)
        best = best if best in BASELINES else None
        if h == 1:
            issues = np.arange(end - 2 * SLOTS_PER_DAY * SLOT_NS, end, SLOT_NS)
            fc = [model.predict(series, int(t)) for t in issues]
            forecast = np.array([f.values[0] if f.complete else np.nan for f in fc])
            band = (np.array([f.p10[0] if f.complete and f.p10 is not None else np.nan for f in fc]),
                    np.array([f.p90[0] if f.complete and f.p90 is not None else np.nan for f in fc]))
            guess = np.array([BASELINES[best](series, int(t), 1)[0] for t in issues]) if best else None
            actual = np.array([series.window(int(t) + SLOT_NS, 1)[0] for t in issues])
            first = int(issues[0]) + SLOT_NS
        else:
            day = SLOTS_PER_DAY * SLOT_NS
            issue = (end - day) // day * day
            f = model.predict(series, int(issue))
            forecast = f.values if f.complete else np.full(h, np.nan)
            nan = np.full(h, np.nan)
            band = (f.p10, f.p90) if f.complete and f.p10 is not None else (nan, nan)
            guess = BASELINES[best](series, int(issue), h) if best else None
            actual = series.window(int(issue) + h * SLOT_NS, h)
            first = int(issue) + SLOT_NS
        kind = "quick" if (doc.get("training") or {}).get("quick") else "full"
        return forecast_vs_actual(first, actual, forecast, f"{doc['name']} {doc['version']} ({kind} training)",
                                  baseline=(baseline_words(best), guess) if best else None,
                                  band=band if np.isfinite(band[0]).any() else None)

    def get(self, owner: str, name: str, version: str) -> dict | None:
        row = self.db.version(owner, name, version)
        return self._decode(row) if row else None

    def named(self, name: str, version: str) -> list[dict]:
        """Every owner's bundle of this name and version."""
        return [self._decode(r) for r in self.db.versions_named(name, version)]

    def by_sha(self, name: str, sha256: str) -> dict | None:
        row = self.db.version_by_sha(name, sha256)
        return self._decode(row) if row else None

    def list(self, limit: int = 200, owner: str | None = None) -> list[dict]:
        return [self._decode(r) for r in self.db.versions(limit, owner)]

    @staticmethod
    def _decode(row: dict) -> dict:
        row = dict(row)
        for k in ("metrics", "data"):
            if isinstance(row.get(k), str):
                row[k] = json.loads(row[k])
        row["node_id"] = owner_node_id(row["owner"])
        row["group"] = row["owner"][6:] if row["owner"].startswith("group:") else None
        # the manifest declares the temperature inputs (window.features, window.weather), and its validation ties
        # them to the name: only `<kind>-96-weather` has them (shared.manifest)
        row["uses_temperature"] = row["name"].endswith(WEATHER_SUFFIX)
        return row
