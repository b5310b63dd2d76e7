"""The checks a bundle must pass on the edge before activation: signature, manifest, hash, load, smoke run."""

from __future__ import annotations

import json
import math

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared import manifest as mf
from shared.bundle import Bundle, BundleRejected
from shared.inference import LoadedModel, ModelError
from shared.interpreter import Runtime
from shared.series import MAX_SLOT_KWH, SlotSeries
from shared.signing import SignatureError, verify_manifest
from shared.window import build_input, residual_base


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
    try:
        model = LoadedModel(doc, bundle.model_bytes, runtime)
    except ModelError as exc:
        raise BundleRejected(exc.code, str(exc)) from None
    smoke(model, recent, issue_ns)
    return doc, model


def smoke(model: LoadedModel, recent: SlotSeries | None, issue_ns: int | None) -> None:
    """Run the model on the real recent window (or, without enough recent data, on a window of typical values)
    and require finite outputs between 0 and the physical maximum of a slot."""
    spec = model.spec
    if recent is not None and issue_ns is not None:
        x, complete = build_input(spec, recent, issue_ns)
    else:
        complete = False
    if not complete:
        x = np.zeros((1, spec.steps, spec.n_features), np.float32)  # every value at the training mean
    try:
        y = model.run(x).reshape(-1)
    except Exception as exc:
        raise BundleRejected("smoke_failed", f"the model fails to run: {exc}") from None
    kwh = y.astype(np.float64) * spec.std + residual_base(spec, x)
    if not np.all(np.isfinite(kwh)) or kwh.min() < -MAX_SLOT_KWH or kwh.max() > MAX_SLOT_KWH:
        raise BundleRejected("smoke_failed", f"the model's forecast on the {'recent' if complete else 'typical'} "
                                             f"window is implausible: {kwh.min():.3g} … {kwh.max():.3g} kWh per slot")
    if not math.isfinite(float(kwh.mean())):
        raise BundleRejected("smoke_failed", "non-finite forecast")
