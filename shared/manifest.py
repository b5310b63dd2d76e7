"""Bundle manifest (schema_version 1): what a model is, how to feed it, how good it is, and its file's sha256.

A bundle is a directory with `manifest.json`, `model.tflite` and, once the server signs it, `signature.json`
(shared/signing.py). Nothing executable: JSON and a TFLite flatbuffer only.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from shared import intervals
from shared.calendar import CalendarError
from shared.digest import sha256_bytes, sha256_file  # noqa: F401 (part of this module's API)
from shared.schema import SLOT_NS, bundle_name
from shared.series import MAX_SLOT_KWH
from shared.window import WindowSpec

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.tflite"
KINDS = ("cnn", "lstm")
HORIZONS = (1, 96)
VERSION_RE = re.compile(r"^\d{8}T\d{6}Z(-[0-9a-z]+)?$")
MAX_STEPS = 4 * 7 * 96  # four weeks of slots: far more than any window the training builds


class ManifestError(ValueError):
    pass


def _require(doc: dict, key: str, types, where: str = "") -> Any:
    if key not in doc:
        raise ManifestError(f"manifest: missing {where}{key}")
    if not isinstance(doc[key], types) or isinstance(doc[key], bool) and types is not bool:
        raise ManifestError(f"manifest: {where}{key} has the wrong type ({type(doc[key]).__name__})")
    return doc[key]


def _number(doc: dict, key: str, where: str, positive: bool = False, lo: float | None = None,
            hi: float | None = None) -> float:
    """A finite number (the edge divides by or multiplies with these: NaN or 0 would poison every forecast)."""
    v = _require(doc, key, (int, float), where)
    if not math.isfinite(v):
        raise ManifestError(f"manifest: {where}{key} must be a finite number, not {v!r}")
    if positive and not v > 0:
        raise ManifestError(f"manifest: {where}{key} must be greater than 0, not {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ManifestError(f"manifest: {where}{key} {v!r} is outside [{lo}, {hi}]")
    return float(v)


def _tensor(doc: dict, name: str) -> dict:
    t = _require(doc, name, dict)
    shape = _require(t, "shape", list, f"{name}.")
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ManifestError(f"manifest: {name}.shape must be positive integers")
    if _require(t, "dtype", str, f"{name}.") not in ("int8", "float32"):
        raise ManifestError(f"manifest: {name}.dtype must be int8 or float32")
    if t["dtype"] == "int8":  # the edge quantizes x / scale + zero_point and dequantizes (q - zero_point) * scale
        _number(t, "scale", f"{name}.", positive=True)
        zp = _require(t, "zero_point", int, f"{name}.")
        if not -128 <= zp <= 127:
            raise ManifestError(f"manifest: {name}.zero_point {zp} is outside the int8 range")
    return t


def _window(doc: dict) -> WindowSpec:
    """The window spec, with every value the edge scales by or indexes with checked (types, finite, in range)."""
    w = _require(doc, "window", dict)
    where = "window."
    _require(w, "layout", str, where)
    steps = _require(w, "steps", int, where)
    if not 1 <= steps <= MAX_STEPS:
        raise ManifestError(f"manifest: window.steps {steps} is outside [1, {MAX_STEPS}]")
    _require(w, "horizon", int, where)
    mean = _number(w, "mean", where, lo=-MAX_SLOT_KWH, hi=MAX_SLOT_KWH)
    std = _number(w, "std", where, positive=True, hi=MAX_SLOT_KWH)
    if "scaling" in w:  # written next to mean/std by the training; both must say the same
        scaling = _require(w, "scaling", dict, where)
        s_mean = _number(scaling, "mean", "window.scaling.")
        s_std = _number(scaling, "std", "window.scaling.", positive=True)
        if (s_mean, s_std) != (mean, std):
            raise ManifestError(f"manifest: window.scaling {scaling} differs from window.mean {mean} / std {std}")
    if "max_missing" in w:
        _number(w, "max_missing", where, lo=0.0, hi=1.0)
    if "step_seconds" in w and _require(w, "step_seconds", int, where) != SLOT_NS // 10**9:
        raise ManifestError(f"manifest: window.step_seconds must be {SLOT_NS // 10**9}")
    if "features" in w:
        features = _require(w, "features", list, where)
        if not all(isinstance(f, str) for f in features):
            raise ManifestError("manifest: window.features must be a list of feature names")
        twice = sorted({f for f in features if features.count(f) > 1})
        if twice:
            raise ManifestError(f"manifest: window.features lists {', '.join(twice)} more than once")
    if w.get("residual") is not None:
        _require(w, "residual", str, where)
    try:
        spec = WindowSpec.from_dict(w)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"manifest: window: {exc}") from None
    fill = "next_median7" if spec.layout == "next" else "median7"
    if fill not in spec.features:
        raise ManifestError(f"manifest: window.features must include {fill} (missing values are filled from it)")
    if spec.calendar is not None:  # the edge must be able to compute the declared calendar (package, country)
        try:
            spec.calendar.check()
        except CalendarError as exc:
            raise ManifestError(f"manifest: window.holidays: {exc}") from None
    if spec.layout == "day" and spec.steps < spec.horizon:
        raise ManifestError(f"manifest: window.steps {spec.steps} is shorter than the horizon {spec.horizon}")
    return spec


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
    name = _require(doc, "name", str)
    if name not in (bundle_name(kind, horizon), bundle_name(kind, horizon, weather=True)):
        raise ManifestError(f"manifest: name must be {bundle_name(kind, horizon)} "
                            f"(or {bundle_name(kind, horizon, weather=True)} with temperature inputs)")
    if not VERSION_RE.match(_require(doc, "version", str)):
        raise ManifestError("manifest: version must look like 20261124T101500Z")
    spec = _window(doc)
    if (name == bundle_name(kind, horizon, weather=True)) != spec.uses_weather:
        # the name tells the edge which bundles need the temperature: a bundle without the suffix must run without it
        raise ManifestError(f"manifest: {name}: a bundle with temperature features is named "
                            f"{bundle_name(kind, horizon, weather=True)}, and only such a bundle has them")
    if spec.horizon != horizon:
        raise ManifestError("manifest: window.horizon differs from horizon_steps")
    inp, out = _tensor(doc, "input"), _tensor(doc, "output")
    if inp["shape"] != [1, spec.steps, spec.n_features]:
        raise ManifestError(f"manifest: input.shape {inp['shape']} does not match the window "
                            f"[1, {spec.steps}, {spec.n_features}]")
    if int(math.prod(out["shape"])) != horizon:
        raise ManifestError(f"manifest: output.shape {out['shape']} does not hold {horizon} values")
    if "intervals" in doc:  # optional: bundles without it have no P10/P90 band
        try:
            intervals.validate(doc["intervals"], horizon)
        except intervals.IntervalError as exc:
            raise ManifestError(str(exc)) from None
    model = _require(doc, "model", dict)
    if _require(model, "file", str, "model.") != MODEL_FILE:
        raise ManifestError(f"manifest: model.file must be {MODEL_FILE}")
    sha = _require(model, "sha256", str, "model.")
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ManifestError("manifest: model.sha256 must be 64 hex digits")
    if _require(model, "bytes", int, "model.") <= 0:
        raise ManifestError("manifest: model.bytes must be positive")
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
