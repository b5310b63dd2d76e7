"""Activation is all-or-nothing: a leftover partial version directory is never reused, a version that does not load
never answers 200, a damaged previous version is not rolled back to, and a damaged active one can be re-pushed."""

from __future__ import annotations

import shutil

import pytest

from edge_agent.models.store import ModelStore
from shared.agent_client import AgentClient, ApiError
from shared.inference import LoadedModel
from tests.helpers.agent import start_agent
from tests.helpers.models import TOKEN, agent_config

V1, V2, V3 = "20260101T000000Z", "20260201T000000Z", "20260301T000000Z"


def client(agent) -> AgentClient:
    return AgentClient(agent.components["api"].url, TOKEN)


def loaded_version(agent, name: str = "cnn-1") -> str | None:
    model = agent.ctx.models().loaded().get(name)
    return model.manifest["version"] if model else None


def models_dir(agent):
    return agent.ctx.models().store.root


def test_partial_directory_left_by_an_interrupted_prune_is_not_reused(agent_with_api, signed):
    c = client(agent_with_api)
    c.push(signed("cnn-1", V1))
    c.push(signed("cnn-1", V2))
    v3 = signed("cnn-1", V3)
    # what an interrupted rmtree leaves: the directory with part of its files, the model cut short
    partial = models_dir(agent_with_api) / "cnn-1" / V3
    partial.mkdir()
    (partial / "manifest.json").write_bytes((v3 / "manifest.json").read_bytes())
    (partial / "model.tflite").write_bytes((v3 / "model.tflite").read_bytes()[:1000])

    assert c.push(v3)["status"] == "active"
    assert loaded_version(agent_with_api) == V3  # really loaded, not just named in state.json
    assert c.status()["counters"].get("model_load_errors", 0) == 0
    for f in ("manifest.json", "model.tflite", "signature.json"):
        assert (partial / f).read_bytes() == (v3 / f).read_bytes()
    LoadedModel.from_dir(partial)
    # only the active and the previous version remain, no partial or temporary directory
    assert sorted(p.name for p in (models_dir(agent_with_api) / "cnn-1").iterdir()) == [V2, V3, "state.json"]


def test_a_version_that_fails_to_load_after_storing_is_not_activated(agent_with_api, signed, monkeypatch):
    c = client(agent_with_api)
    c.push(signed("cnn-1", V1))
    store = agent_with_api.ctx.models().store
    real_files = store.files

    def damaged_read(entry):  # the disk hands back other bytes than were written (fault injection)
        doc, data = real_files(entry)
        return doc, (b"\0" * len(data) if entry.version == V2 else data)

    monkeypatch.setattr(store, "files", damaged_read)
    with pytest.raises(ApiError) as err:
        c.push(signed("cnn-1", V2))
    assert err.value.status >= 500 and err.value.code == "activation_failed", err.value
    st = c.status()["models"]["cnn-1"]
    assert st["active"]["version"] == V1 and st["previous"] is None
    assert loaded_version(agent_with_api) == V1
    monkeypatch.undo()
    assert c.push(signed("cnn-1", V2, tag="again"))["status"] == "active"
    assert loaded_version(agent_with_api) == V2


def test_rollback_to_a_damaged_previous_version_is_refused(agent_with_api, signed):
    c = client(agent_with_api)
    v1 = signed("cnn-1", V1)
    c.push(v1)
    c.push(signed("cnn-1", V2))
    model = models_dir(agent_with_api) / "cnn-1" / V1 / "model.tflite"
    model.write_bytes(model.read_bytes()[:2000])
    with pytest.raises(ApiError) as err:
        c.rollback("cnn-1")
    assert err.value.status == 409 and err.value.code == "previous_damaged", err.value
    st = c.status()["models"]["cnn-1"]
    assert st["active"]["version"] == V2 and st["previous"]["version"] == V1
    assert loaded_version(agent_with_api) == V2
    # pushing the previous version again repairs it
    assert c.push(v1, allow_older=True)["status"] == "active"
    assert loaded_version(agent_with_api) == V1


def test_a_damaged_active_version_is_reinstalled_by_pushing_it_again(tmp_path, mosquitto_session, influxd_session,
                                                                     influx_db_name, server_keys, signed):
    cfg = agent_config(tmp_path / "agent", mosquitto_session.port, influxd_session.url, influx_db_name, server_keys)
    components = ("forecast", "api")
    agent = start_agent(cfg, components=components)
    v1 = signed("cnn-1", V1)
    try:
        client(agent).push(v1)
        root = models_dir(agent)
    finally:
        agent.stop()
    model = root / "cnn-1" / V1 / "model.tflite"
    model.write_bytes(model.read_bytes()[:3000])  # damaged while the agent was down
    agent = start_agent(cfg, components=components)
    try:
        assert loaded_version(agent) is None  # could not load it at start
        assert client(agent).push(v1)["status"] == "active"  # not "unchanged"
        assert loaded_version(agent) == V1
        assert model.read_bytes() == (v1 / "model.tflite").read_bytes()
    finally:
        agent.stop()


def _files(bundle) -> tuple[bytes, bytes, bytes]:
    return tuple((bundle / f).read_bytes() for f in ("manifest.json", "model.tflite", "signature.json"))


def test_store_start_removes_versions_that_state_does_not_name(tmp_path, signed):
    store = ModelStore(tmp_path / "models")
    store.activate("cnn-1", V1, *_files(signed("cnn-1", V1)))
    store.activate("cnn-1", V2, *_files(signed("cnn-1", V2)))
    stray = tmp_path / "models" / "cnn-1" / V3  # renamed into place, then a crash before state.json changed
    shutil.copytree(tmp_path / "models" / "cnn-1" / V2, stray)
    (tmp_path / "models" / "cnn-1" / ".tmp-deadbeef").mkdir()
    store = ModelStore(tmp_path / "models")
    assert sorted(p.name for p in (tmp_path / "models" / "cnn-1").iterdir()) == [V1, V2, "state.json"]
    assert store.active("cnn-1").version == V2 and store.previous("cnn-1").version == V1


def test_store_check_detects_damage(tmp_path, signed):
    store = ModelStore(tmp_path / "models")
    entry = store.activate("cnn-1", V1, *_files(signed("cnn-1", V1)))
    store.check(entry)
    (entry.path / "signature.json").unlink()
    with pytest.raises(ValueError, match="signature.json"):
        store.check(entry)
