"""Bundle manifest (schema_version 1): what a model is, how to feed it, how good it is, and its file's sha256.

A bundle is a directory with `manifest.json`, `model.tflite` and, once the server signs it, `signature.json`
(shared/signing.py). Nothing executable: JSON and a TFLite flatbuffer only.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from shared.window import WindowSpec

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.tflite"
KINDS = ("cnn", "lstm")
HORIZONS = (1, 96)
VERSION_RE = re.compile(r"^\d{8}T\d{6}Z(-[0-9a-z]+)?$")


class ManifestError(ValueError):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _require(doc: dict, key: str, types, where: str = "") -> Any:
    if key not in doc:
        raise ManifestError(f"manifest: missing {where}{key}")
    if not isinstance(doc[key], types) or isinstance(doc[key], bool) and types is not bool:
        raise ManifestError(f"manifest: {where}{key} has the wrong type ({type(doc[key]).__name__})")
    return doc[key]


def _tensor(doc: dict, name: str) -> dict:
    t = _require(doc, name, dict)
    shape = _require(t, "shape", list, f"{name}.")
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ManifestError(f"manifest: {name}.shape must be positive integers")
    if _require(t, "dtype", str, f"{name}.") not in ("int8", "float32"):
        raise ManifestError(f"manifest: {name}.dtype must be int8 or float32")
    if t["dtype"] == "int8":
        _require(t, "scale", (int, float), f"{name}.")
        _require(t, "zero_point", int, f"{name}.")
    return t


def validate(doc: Any) -> dict:
    """Check a parsed manifest; returns it or raises ManifestError naming the problem."""
    if not isinstance(doc, dict):
        raise ManifestError("manifest: not a JSON object")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"manifest: schema_version {doc.get('schema_version')!r} is not supported "
                            f"(this code reads {SCHEMA_VERSION})")
    kind = _require(doc, "kind", str)
    horizon = _require(doc, "horizon_steps", int)
    if kind not in KINDS or horizon not in HORIZONS:
        raise ManifestError(f"manifest: kind {kind!r}/horizon {horizon} not one of {KINDS} × {HORIZONS}")
    if _require(doc, "name", str) != f"{kind}-{horizon}":
        raise ManifestError(f"manifest: name must be {kind}-{horizon}")
    if not VERSION_RE.match(_require(doc, "version", str)):
        raise ManifestError("manifest: version must look like 20261124T101500Z")
    try:
        spec = WindowSpec.from_dict(_require(doc, "window", dict))
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"manifest: window: {exc}") from None
    if spec.horizon != horizon:
        raise ManifestError("manifest: window.horizon differs from horizon_steps")
    inp, out = _tensor(doc, "input"), _tensor(doc, "output")
    if inp["shape"] != [1, spec.steps, spec.n_features]:
        raise ManifestError(f"manifest: input.shape {inp['shape']} does not match the window "
                            f"[1, {spec.steps}, {spec.n_features}]")
    if int(__import__("math").prod(out["shape"])) != horizon:
        raise ManifestError(f"manifest: output.shape {out['shape']} does not hold {horizon} values")
    model = _require(doc, "model", dict)
    if _require(model, "file", str, "model.") != MODEL_FILE:
        raise ManifestError(f"manifest: model.file must be {MODEL_FILE}")
    sha = _require(model, "sha256", str, "model.")
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ManifestError("manifest: model.sha256 must be 64 hex digits")
    _require(model, "bytes", int, "model.")
    return doc


def window_spec(doc: dict) -> WindowSpec:
    return WindowSpec.from_dict(doc["window"])


def load(bundle_dir: Path) -> dict:
    try:
        doc = json.loads((Path(bundle_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {bundle_dir}/{MANIFEST_FILE}: {exc}") from None
    return validate(doc)


def dump(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
