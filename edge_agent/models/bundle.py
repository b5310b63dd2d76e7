"""An uploaded bundle (tar archive read in memory) and the checks it must pass before activation."""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.inference import LoadedModel, ModelError
from edge_agent.interpreter import Runtime
from shared import manifest as mf
from shared.series import MAX_SLOT_KWH, SlotSeries
from shared.signing import SIGNATURE_FILE, SignatureError, verify_manifest
from shared.window import build_input, residual_base

MEMBERS = (mf.MANIFEST_FILE, mf.MODEL_FILE, SIGNATURE_FILE)


class BundleRejected(Exception):
    """`code` is one of: bad_archive, too_large, unsigned, bad_signature, bad_manifest, hash_mismatch,
    not_tflite, load_failed, shape_mismatch, smoke_failed, older_version."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Bundle:
    manifest_bytes: bytes
    model_bytes: bytes
    signature_bytes: bytes | None

    @classmethod
    def from_archive(cls, data: bytes, max_member_bytes: int) -> Bundle:
        """Read the three known members by name; nothing is extracted to disk, nothing else is read."""
        files: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if "/" in name:  # a bundle directory inside the archive: use its basename
                        name = name.rsplit("/", 1)[1]
                    if name not in MEMBERS or not member.isfile():
                        continue
                    if member.size > max_member_bytes:
                        raise BundleRejected("too_large", f"{name} has {member.size} bytes, limit {max_member_bytes}",
                                             413)
                    f = tar.extractfile(member)
                    files[name] = f.read() if f else b""
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise BundleRejected("bad_archive", f"not a readable tar archive: {exc}", 400) from None
        for name in (mf.MANIFEST_FILE, mf.MODEL_FILE):
            if name not in files:
                raise BundleRejected("bad_archive", f"the archive has no {name}", 400)
        return cls(files[mf.MANIFEST_FILE], files[mf.MODEL_FILE], files.get(SIGNATURE_FILE))

    def to_archive(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in ((mf.MANIFEST_FILE, self.manifest_bytes), (mf.MODEL_FILE, self.model_bytes),
                               (SIGNATURE_FILE, self.signature_bytes)):
                if data is None:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def verify(bundle: Bundle, trusted: Ed25519PublicKey, runtime: Runtime, recent: SlotSeries | None,
           issue_ns: int | None) -> tuple[dict, LoadedModel]:
    """Run every check; returns the manifest and the loaded model, or raises BundleRejected."""
    try:
        verify_manifest(bundle.manifest_bytes, bundle.signature_bytes, trusted)
    except SignatureError as exc:
        raise BundleRejected(exc.code, exc.message, 403) from None
    try:
        doc = mf.validate(json.loads(bundle.manifest_bytes))
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
