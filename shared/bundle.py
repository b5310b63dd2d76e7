"""The bundle archive format both halves speak: the server packs a bundle directory into a tar.gz, the edge reads
one back in memory with strict limits (plain tar or gzip only, a bounded number and size of members).
The edge's checks before activation are in edge_agent/models/verify.py."""

from __future__ import annotations

import io
import itertools
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from shared import manifest as mf
from shared.signing import SIGNATURE_FILE

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




def bundle_archive(bundle_dir: Path) -> bytes:
    """A tar.gz of a bundle directory, as the agent's model API expects."""
    d = Path(bundle_dir)
    sig = d / SIGNATURE_FILE
    return Bundle((d / mf.MANIFEST_FILE).read_bytes(), (d / mf.MODEL_FILE).read_bytes(),
                  sig.read_bytes() if sig.exists() else None).to_archive()
