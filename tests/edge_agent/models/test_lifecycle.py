"""Bundle verification (every rejection), atomic swap, rollback and the older-version policy over real HTTP."""

import hashlib
import io
import json
import tarfile

import pytest

from shared import signing
from shared.agent_client import AgentClient, ApiError
from shared.bundle import bundle_archive
from tests.helpers.models import TOKEN


def client(agent) -> AgentClient:
    return AgentClient(agent.components["api"].url, TOKEN)


def test_status_requires_the_token(agent_with_api):
    with pytest.raises(ApiError) as err:
        AgentClient(agent_with_api.components["api"].url, "wrong-token").status()
    assert err.value.status == 401
    st = client(agent_with_api).status()
    assert st["interpreter"]["name"] == "ai-edge-litert" and st["interpreter"]["version"] == "2.3.0"
    assert st["models"]["cnn-1"] == {"active": None, "previous": None}


def test_push_swap_rollback_and_older_policy(agent_with_api, signed):
    c = client(agent_with_api)
    v1 = signed("cnn-1", "20260101T000000Z")
    v2 = signed("cnn-1", "20260201T000000Z")
    assert c.push(v1) == {"name": "cnn-1", "version": "20260101T000000Z", "status": "active"}
    assert c.push(v2)["status"] == "active"
    st = c.status()["models"]["cnn-1"]
    assert st["active"]["version"] == "20260201T000000Z" and st["previous"]["version"] == "20260101T000000Z"
    loaded = agent_with_api.ctx.models().loaded
    assert loaded()["cnn-1"].manifest["version"] == "20260201T000000Z"  # swapped in memory too
    assert c.push(v2)["status"] == "unchanged"
    # older than active: refused unless asked for
    v0 = signed("cnn-1", "20251201T000000Z")
    with pytest.raises(ApiError) as err:
        c.push(v0)
    assert err.value.status == 409 and err.value.code == "older_version"
    assert c.status()["models"]["cnn-1"]["active"]["version"] == "20260201T000000Z"
    # rollback
    assert c.rollback("cnn-1")["version"] == "20260101T000000Z"
    assert loaded()["cnn-1"].manifest["version"] == "20260101T000000Z"
    assert c.status()["models"]["cnn-1"]["previous"]["version"] == "20260201T000000Z"
    with pytest.raises(ApiError) as err:
        c.rollback("lstm-96")
    assert err.value.code in ("unknown_model", "no_previous")
    assert c.push(v0, allow_older=True)["status"] == "active"


def _tamper_model(path):
    data = bytearray((path / "model.tflite").read_bytes())
    data[-100] ^= 0xFF
    (path / "model.tflite").write_bytes(bytes(data))


def _archive_without(path, member):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(path.iterdir()):
            if f.name != member:
                tar.add(f, arcname=f.name)
    return buf.getvalue()


def test_every_rejection_leaves_the_active_model(agent_with_api, signed, seed_bundles, server_keys, tmp_path):
    c = client(agent_with_api)
    good = signed("cnn-1", "20260101T000000Z")
    c.push(good)
    before = c.status()["models"]

    cases = {}
    cases["unsigned"] = _archive_without(signed("cnn-1", "20260301T000000Z", tag="u"), "signature.json")
    wrong = signed("cnn-1", "20260301T000000Z", tag="w")
    signing.sign_bundle_dir(wrong, signing.generate_keypair())
    cases["bad_signature"] = bundle_archive(wrong)
    tampered_manifest = signed("cnn-1", "20260301T000000Z", tag="m")
    doc = json.loads((tampered_manifest / "manifest.json").read_text())
    doc["window"]["mean"] = 5.0
    (tampered_manifest / "manifest.json").write_text(json.dumps(doc))
    cases["bad_signature "] = bundle_archive(tampered_manifest)
    tampered_model = signed("cnn-1", "20260301T000000Z", tag="t")
    _tamper_model(tampered_model)
    cases["hash_mismatch"] = bundle_archive(tampered_model)
    cases["bad_archive"] = bundle_archive(good)[:300]  # truncated upload
    not_tflite = signed("cnn-1", "20260301T000000Z", tag="n", mutate=lambda d: d["model"].update(
        sha256=hashlib.sha256(b"\x00" * 64).hexdigest(), bytes=64))
    (not_tflite / "model.tflite").write_bytes(b"\x00" * 64)
    cases["not_tflite"] = bundle_archive(not_tflite)

    # the lstm-1 model (16 steps) under a manifest whose window says 32 steps (like cnn-1)
    shape = tmp_path / "shape"
    shape.mkdir()
    (shape / "model.tflite").write_bytes((seed_bundles / "lstm-1" / "model.tflite").read_bytes())
    doc = json.loads((seed_bundles / "cnn-1" / "manifest.json").read_text())
    doc.update(name="lstm-1", kind="lstm", version="20260301T000000Z")
    doc["model"].update(sha256=hashlib.sha256((shape / "model.tflite").read_bytes()).hexdigest(),
                        bytes=(shape / "model.tflite").stat().st_size)
    (shape / "manifest.json").write_text(json.dumps(doc))
    signing.sign_bundle_dir(shape, server_keys)
    cases["shape_mismatch"] = bundle_archive(shape)
    cases["too_large"] = b"\x1f\x8b" + b"\x00" * 400_000
    bad_manifest = signed("cnn-1", mutate=lambda d: d.update(schema_version=99), tag="b")
    cases["bad_manifest"] = bundle_archive(bad_manifest)

    for expected, archive in cases.items():
        with pytest.raises(ApiError) as err:
            c.push_archive(archive)
        assert err.value.code == expected.strip(), (expected, err.value)
        assert err.value.message
    assert c.status()["models"] == before
    counters = c.status()["counters"]
    assert counters["bundle_rejected_bad_signature"] == 2 and counters["bundle_rejected_hash_mismatch"] == 1



def test_status_names_the_node_a_version_was_trained_for(agent_with_api, signed):
    """Issue 17: the server's training task writes the house into the manifest (data.node); the agent reports it
    per version, so a version trained for another house shows as such."""
    c = client(agent_with_api)
    plain = signed("lstm-1", "20260101T000000Z")
    owned = signed("lstm-1", "20260201T000000Z", mutate=lambda d: d["data"].__setitem__("node", "house-a"))
    c.push(plain)
    assert "node" not in c.status()["models"]["lstm-1"]["active"]
    c.push(owned)
    st = c.status()["models"]["lstm-1"]
    assert st["active"]["node"] == "house-a" and "node" not in st["previous"]
