"""An uploaded bundle (tar archive read in memory) and the checks it must pass before activation."""

from __future__ import annotations

import io
import itertools
import json
import math
import tarfile
import zlib
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
MAX_MEMBERS = 16  # a bundle has three files (and maybe a directory entry); anything beyond is not a bundle
MANIFEST_MAX_BYTES = 256 * 1024
SIGNATURE_MAX_BYTES = 4096
TAR_OVERHEAD = 256 * 1024  # headers (pax/GNU long names included) of MAX_MEMBERS members and the end padding
GZIP_MAGIC = b"\x1f\x8b"
OTHER_COMPRESSIONS = {b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


class BundleRejected(Exception):
    """`code` is one of: bad_archive, too_large, unsigned, bad_signature, bad_manifest, hash_mismatch,
    not_tflite, load_failed, shape_mismatch, smoke_failed, older_version (and, from the API, activation_failed,
    previous_damaged, unknown_model, no_previous)."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (several members allowed), refusing at once when the output would exceed `limit` bytes."""
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or d.unconsumed_tail:
                raise BundleRejected("too_large", f"the archive unpacks to more than {limit} bytes", 413)
            out += d.flush()
        except zlib.error as exc:
            raise BundleRejected("bad_archive", f"not a readable gzip stream: {exc}", 400) from None
        if len(out) > limit:
            raise BundleRejected("too_large", f"the archive unpacks to more than {limit} bytes", 413)
        if not d.eof:
            raise BundleRejected("bad_archive", "the gzip stream is truncated", 400)
        rest = d.unused_data
        if rest and not rest.startswith(GZIP_MAGIC):
            raise BundleRejected("bad_archive", "trailing data after the gzip stream", 400)
    return bytes(out)


@dataclass
class Bundle:
    manifest_bytes: bytes
    model_bytes: bytes
    signature_bytes: bytes | None

    @classmethod
    def from_archive(cls, data: bytes, max_member_bytes: int) -> Bundle:
        """Read the three known members by name from a tar or tar.gz; nothing is extracted to disk, nothing else
        is read. Bounded work whatever the input: gzip only (bz2/xz bombs are refused before decompressing), the
        unpacked size is capped while decompressing, at most MAX_MEMBERS members are looked at."""
        limits = {mf.MANIFEST_FILE: MANIFEST_MAX_BYTES, SIGNATURE_FILE: SIGNATURE_MAX_BYTES,
                  mf.MODEL_FILE: max_member_bytes}
        for magic, kind in OTHER_COMPRESSIONS.items():
            if data.startswith(magic):
                raise BundleRejected("bad_archive", f"{kind} compression is not accepted: send a tar or a tar.gz",
                                     400)
        if data.startswith(GZIP_MAGIC):
            data = _gunzip(data, max_member_bytes + MANIFEST_MAX_BYTES + SIGNATURE_MAX_BYTES + TAR_OVERHEAD)
        files: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for n in itertools.count(1):
                    member = tar.next()
                    if member is None:
                        break
                    if n > MAX_MEMBERS:
                        raise BundleRejected("bad_archive", f"the archive has more than {MAX_MEMBERS} members; a "
                                                            "bundle has manifest.json, model.tflite, signature.json",
                                             400)
                    name = member.name.removeprefix("./")
                    if "/" in name:  # a bundle directory inside the archive: use its basename
                        name = name.rsplit("/", 1)[1]
                    if name not in MEMBERS or not member.isfile():
                        continue
                    if name in files:
                        raise BundleRejected("bad_archive", f"the archive holds {name} twice", 400)
                    if member.size > limits[name]:
                        raise BundleRejected("too_large", f"{name} has {member.size} bytes, limit {limits[name]}",
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
