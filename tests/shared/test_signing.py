"""Ed25519 bundle signatures: round trip, tampering, wrong key, key files."""

import json
import stat

import pytest

from shared import signing


def test_sign_and_verify_round_trip(tmp_path):
    pair = signing.generate_keypair()
    (tmp_path / "manifest.json").write_text('{"name": "cnn-1"}')
    sig_path = signing.sign_bundle_dir(tmp_path, pair)
    doc = json.loads(sig_path.read_text())
    assert doc["alg"] == "ed25519" and doc["key_id"] == pair.key_id
    trusted = signing.public_key_from_text(pair.public_text)
    signing.verify_manifest((tmp_path / "manifest.json").read_bytes(), sig_path.read_bytes(), trusted)


@pytest.mark.parametrize("case", ["tampered", "wrong_key", "unsigned", "garbage"])
def test_verification_failures(case):
    pair, other = signing.generate_keypair(), signing.generate_keypair()
    manifest = b'{"name": "cnn-1", "model": {"sha256": "00"}}'
    doc = signing.sign_manifest(manifest, pair)
    trusted = pair.public
    if case == "tampered":
        manifest = manifest.replace(b"00", b"01")
    elif case == "wrong_key":
        trusted = other.public
    elif case == "unsigned":
        doc = None
    else:
        doc = b"not json"
    with pytest.raises(signing.SignatureError) as err:
        signing.verify_manifest(manifest, doc, trusted)
    assert err.value.code == ("unsigned" if case == "unsigned" else "bad_signature")


def test_private_key_file_is_0600_and_reused(tmp_path):
    path = tmp_path / "keys" / "server.key"
    first = signing.load_or_create_keypair(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_or_create_keypair(path).public_text == first.public_text


def test_public_key_text_rejects_bad_input():
    with pytest.raises(ValueError):
        signing.public_key_from_text("AAAA")
    with pytest.raises(ValueError):
        signing.public_key_from_text("not base64!")


def _create(args):
    path, barrier = args
    barrier.wait()
    return signing.load_or_create_keypair(path).public_text


def test_parallel_first_starts_create_one_key_pair(tmp_path):
    """Several server processes starting at once on an empty dir: one key pair, no crash, no temp file left."""
    import multiprocessing

    path = tmp_path / "keys" / "signing.key"
    # spawn, not fork: forking a test process whose other threads hold locks can deadlock the children
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as m:
        barrier = m.Barrier(8)
        with ctx.Pool(8) as pool:
            keys = pool.map(_create, [(path, barrier)] * 8)
    assert len(set(keys)) == 1
    assert signing.load_private_key(path).public_text == keys[0]
    assert not list(path.parent.glob("*.tmp"))
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
