"""The checks a bundle must pass on the edge before activation: signature, manifest, hash, then a load and smoke
run in a child process (edge_agent/models/sandbox.py), then the load in the agent."""

from __future__ import annotations

import json
import math

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.models.sandbox import SandboxError, run_isolated
from shared import manifest as mf
from shared.bundle import Bundle, BundleRejected
from shared.inference import LoadedModel, ModelError, preflight
from shared.interpreter import Runtime
from shared.series import MAX_SLOT_KWH, SlotSeries
from shared.signing import SignatureError, verify_manifest
from shared.window import WindowSpec, build_input, residual_base


def verify(bundle: Bundle, trusted: Ed25519PublicKey, runtime: Runtime, recent: SlotSeries | None,
           issue_ns: int | None) -> tuple[dict, LoadedModel]:
    """Run every check; returns the manifest and the loaded model, or raises BundleRejected."""
    try:
        verify_manifest(bundle.manifest_bytes, bundle.signature_bytes, trusted)
    except SignatureError as exc:
        raise BundleRejected(exc.code, exc.message, 403) from None
    except RecursionError:  # signature.json nested too deep for the JSON parser
        raise BundleRejected("bad_signature", "signature.json is not a signature document", 403) from None
    try:
        doc = mf.validate(json.loads(bundle.manifest_bytes))
    except RecursionError:
        raise BundleRejected("bad_manifest", "manifest.json is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleRejected("bad_manifest", str(exc)) from None
    sha = mf.sha256_bytes(bundle.model_bytes)
    if sha != doc["model"]["sha256"] or len(bundle.model_bytes) != doc["model"]["bytes"]:
        raise BundleRejected("hash_mismatch", f"model.tflite has sha256 {sha[:16]}… and {len(bundle.model_bytes)} "
                                              f"bytes; the manifest says {doc['model']['sha256'][:16]}… and "
                                              f"{doc['model']['bytes']}")
    x, complete = smoke_input(mf.window_spec(doc), recent, issue_ns)
    try:
        preflight(bundle.model_bytes, runtime)  # what is refused without running anything, here
    except ModelError as exc:
        raise BundleRejected(exc.code, str(exc)) from None
    try:  # then a first load and run in a child process: a model that exhausts memory or crashes the interpreter dies there alone
        y = run_isolated(runtime, doc, bundle.model_bytes, x)
    except SandboxError as exc:
        raise BundleRejected(exc.code, str(exc)) from None
    try:
        model = LoadedModel(doc, bundle.model_bytes, runtime)
    except ModelError as exc:
        raise BundleRejected(exc.code, str(exc)) from None
    check_plausible(model.spec, x, y, complete)
    return doc, model


def smoke_input(spec: WindowSpec, recent: SlotSeries | None, issue_ns: int | None) -> tuple[np.ndarray, bool]:
    """The real recent window, or (without enough recent data) a window of typical values."""
    if recent is not None and issue_ns is not None:
        x, complete = build_input(spec, recent, issue_ns)
        if complete:
            return x, True
    return np.zeros((1, spec.steps, spec.n_features), np.float32), False  # every value at the training mean


def check_plausible(spec: WindowSpec, x: np.ndarray, y: np.ndarray, complete: bool) -> None:
    """Finite outputs between the physical bounds of a slot."""
    kwh = y.reshape(-1).astype(np.float64) * spec.std + residual_base(spec, x)
    if not np.all(np.isfinite(kwh)) or kwh.min() < -MAX_SLOT_KWH or kwh.max() > MAX_SLOT_KWH:
        raise BundleRejected("smoke_failed", f"the model's forecast on the {'recent' if complete else 'typical'} "
                                             f"window is implausible: {kwh.min():.3g} … {kwh.max():.3g} kWh per slot")
    if not math.isfinite(float(kwh.mean())):
        raise BundleRejected("smoke_failed", "non-finite forecast")
