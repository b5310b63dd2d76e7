"""Ed25519 signatures over bundle manifests (the server signs, the edge verifies).

A bundle's `signature.json` holds `{"alg": "ed25519", "key_id": ..., "signature": base64}`; the signature is over
the exact bytes of `manifest.json`, which records the model file's sha256, so it covers the model too.
Public keys travel as base64 of the 32 raw bytes; private keys are stored as PEM (PKCS#8) with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG = "ed25519"
SIGNATURE_FILE = "signature.json"


class SignatureError(Exception):
    """A signature is missing, malformed, made with another key, or does not match."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key: the first 16 hex digits of sha256 over its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_to_text(public_key: Ed25519PublicKey) -> str:
    """Base64 of the 32 raw bytes, as shown on the server page and put in the edge's config."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse a public key given as base64 raw bytes (or a PEM block)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM public key is not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"public key is not valid base64: {exc}") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one has {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class KeyPair:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    @property
    def public_text(self) -> str:
        return public_key_to_text(self.public)


def generate_keypair() -> KeyPair:
    return KeyPair(Ed25519PrivateKey.generate())


def save_private_key(pair: KeyPair, path: Path) -> None:
    """Write the private key as PEM, created with mode 0600 (never readable by others, even briefly)."""
    pem = pair.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_private_key(path: Path) -> KeyPair:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return KeyPair(key)


def load_or_create_keypair(path: Path) -> KeyPair:
    """The server's key pair: generated on first start, reused afterwards.

    Several processes (gunicorn workers) may start together on an empty data dir: the key is created once, under
    an exclusive lock on `<path>.lock`, so every process gets the same key pair and none sees a half-written file.
    The key's directory is made 0700."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent.stat().st_mode & 0o777 != 0o700:
        path.parent.chmod(0o700)
    if path.exists():
        return load_private_key(path)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if path.exists():  # another process made it while we waited
            return load_private_key(path)
        pair = generate_keypair()
        save_private_key(pair, path)
        return pair
    finally:
        os.close(fd)


def sign_manifest(manifest_bytes: bytes, pair: KeyPair) -> dict:
    """The signature.json document for these exact manifest bytes."""
    return {"alg": ALG, "key_id": pair.key_id,
            "signature": base64.b64encode(pair.private.sign(manifest_bytes)).decode("ascii")}


def sign_bundle_dir(bundle_dir: Path, pair: KeyPair) -> Path:
    """Sign `bundle_dir/manifest.json` and write `bundle_dir/signature.json`; returns its path."""
    bundle_dir = Path(bundle_dir)
    doc = sign_manifest((bundle_dir / "manifest.json").read_bytes(), pair)
    out = bundle_dir / SIGNATURE_FILE
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out


def verify_manifest(manifest_bytes: bytes, signature_doc: bytes | dict | None,
                    trusted: Ed25519PublicKey) -> None:
    """Raise SignatureError unless `signature_doc` is a valid Ed25519 signature of the manifest by `trusted`."""
    if signature_doc is None:
        raise SignatureError("unsigned", "the bundle has no signature.json")
    if isinstance(signature_doc, bytes | bytearray):
        try:
            signature_doc = json.loads(signature_doc)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SignatureError("bad_signature", f"signature.json is not JSON: {exc}") from None
    if not isinstance(signature_doc, dict) or signature_doc.get("alg") != ALG:
        raise SignatureError("bad_signature", f"signature.json must be an object with alg={ALG!r}")
    expected_id = key_id(trusted)
    if signature_doc.get("key_id") != expected_id:
        raise SignatureError("bad_signature", f"signed with key {signature_doc.get('key_id')!r}, "
                                              f"this agent trusts key {expected_id!r}")
    try:
        sig = base64.b64decode(str(signature_doc.get("signature", "")), validate=True)
    except binascii.Error:
        raise SignatureError("bad_signature", "the signature is not valid base64") from None
    try:
        trusted.verify(sig, manifest_bytes)
    except InvalidSignature:
        raise SignatureError("bad_signature", "the signature does not match the manifest "
                                              "(tampered manifest or wrong key)") from None
