"""The push gate compares the new and the active version only on data after the later of their training ends:
a version must not win on days it trained on, and without enough such days nothing is pushed automatically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from server import nodes
from server.registry import node_owner
from shared import manifest as mf
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import iso, parse_time_ns
from tests.conftest import SEED_CSV

DAY = SLOTS_PER_DAY * SLOT_NS


@pytest.fixture(scope="module")
def seed_series():
    from training.data import load

    return load([SEED_CSV])


def _other_model(src: Path, dst: Path, data_end: str) -> Path:
    """The same network as another version: other model bytes (trailing bytes after the flatbuffer, so another
    sha256) and another training end."""
    shutil.copytree(src, dst)
    model = dst / mf.MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0" * 16)
    doc = json.loads((dst / mf.MANIFEST_FILE).read_text())
    doc["model"] |= {"sha256": mf.sha256_file(model), "bytes": model.stat().st_size}
    doc["data"]["end"] = data_end
    (dst / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))
    return dst


def _pair(app, seed_bundles, tmp_path, name: str, active_end: str | None = None):
    """(registry, status, new row, active row): the seed bundle is new; the active one ends at `active_end`."""
    s = app.extensions["home_energy"]
    owner = node_owner(1)
    new = s.registry.add_run([seed_bundles / name], owner)[0]
    active_end = active_end or iso(parse_time_ns(new["data"]["end"]) - 30 * DAY)
    active = s.registry.add_run([_other_model(seed_bundles / name, tmp_path / name, active_end)], owner)[0]
    assert active["sha256"] != new["sha256"]
    status = {"models": {name: {"active": {"version": active["version"], "sha256": active["sha256"],
                                           "activated_at": "2023-05-01T00:00:00Z"}}}}
    return s.registry, status, new, active


@pytest.mark.parametrize("name", ["cnn-96", "cnn-1"])
def test_no_automatic_push_when_the_compared_days_were_training_data(app, seed_bundles, tmp_path, seed_series,
                                                                     name):
    """The job's own training data (what auto_push compares on) lies wholly before the new version's training end:
    the new version trained on those days and must not be compared there (the old gate pushed it)."""
    registry, status, new, _ = _pair(app, seed_bundles, tmp_path, name)
    end = parse_time_ns(new["data"]["end"])
    ok, why = nodes.gate(registry, status, new, seed_series.until(end))
    assert not ok, why
    assert "only 0.0 days of recent data after the training end " + iso(end) in why
    assert "push it again after a later pull" in why and "push it manually with override" in why


def test_the_later_training_end_counts(app, seed_bundles, tmp_path, seed_series):
    """Four days after the new version's training end, but only one after the active version's: a day-ahead
    comparison needs two unseen days, so nothing is pushed; two days later it is compared from that end."""
    name = "cnn-96"
    probe = mf.load(seed_bundles / name)
    new_end = parse_time_ns(probe["data"]["end"])
    registry, status, new, active = _pair(app, seed_bundles, tmp_path, name, iso(new_end + 3 * DAY))
    ok, why = nodes.gate(registry, status, new, seed_series.until(new_end + 4 * DAY))
    assert not ok and f"only 1.0 days of recent data after the training end {iso(new_end + 3 * DAY)}" in why, why
    start, _ = nodes.gate_window(new, active, seed_series.until(new_end + 6 * DAY))
    assert start == new_end + 3 * DAY
    ok, why = nodes.gate(registry, status, new, seed_series.until(new_end + 6 * DAY))
    # the same network: equal MAE on the unseen days, so the new one is not worse
    assert ok and f"3.0 days after the training end {iso(new_end + 3 * DAY)}" in why, why


def test_at_most_the_last_gate_days_are_compared(app, seed_bundles, tmp_path, seed_series):
    registry, status, new, active = _pair(app, seed_bundles, tmp_path, "cnn-1")
    new_end = parse_time_ns(new["data"]["end"])
    series = seed_series.until(new_end + 20 * DAY)
    start, span = nodes.gate_window(new, active, series)
    assert start == series.last_ns - nodes.GATE_DAYS * DAY and span.startswith("7.0 days"), span
    ok, why = nodes.gate(registry, status, new, series)
    assert ok, why


def test_a_version_without_a_training_end_is_not_pushed_automatically(app, seed_bundles, tmp_path, seed_series):
    registry, status, new, _ = _pair(app, seed_bundles, tmp_path, "cnn-1")
    ok, why = nodes.gate(registry, status, new | {"data": {}}, seed_series)
    assert not ok and "data.end" in why, why


def _version(src: Path, dst: Path, data_end: str, version: str) -> Path:
    d = _other_model(src, dst, data_end)
    model = d / mf.MODEL_FILE
    model.write_bytes(model.read_bytes() + version.encode())  # a sha256 of its own
    doc = json.loads((d / mf.MANIFEST_FILE).read_text())
    doc["version"] = version
    doc["model"] |= {"sha256": mf.sha256_file(model), "bytes": model.stat().st_size}
    (d / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))
    return d


def test_a_retrain_pushes_an_earlier_version_once_it_has_unseen_days(app, seed_bundles, tmp_path, seed_series):
    """Nightly retrains train on everything up to now, so their new version never has unseen days: the gate then
    tries the house's earlier versions (newer than the active one), newest first — a version from three days ago
    is compared on the three days after its training end and pushed; older ones than the active never are."""
    name = "cnn-96"
    s = app.extensions["home_energy"]
    owner = node_owner(1)
    end = parse_time_ns(mf.load(seed_bundles / name)["data"]["end"])
    src = seed_bundles / name
    old = s.registry.add_run([_version(src, tmp_path / "old", iso(end - 40 * DAY), "20260101T000000Z")], owner)[0]
    active = s.registry.add_run([_version(src, tmp_path / "act", iso(end - 30 * DAY), "20260201T000000Z")], owner)[0]
    earlier = s.registry.add_run([_version(src, tmp_path / "ear", iso(end - 3 * DAY), "20260301T000000Z")],
                                 owner)[0]
    new = s.registry.add_run([_version(src, tmp_path / "new", iso(end), "20260304T000000Z")], owner)[0]
    status = {"models": {name: {"active": {"version": active["version"], "sha256": active["sha256"],
                                           "activated_at": "2026-02-01T00:00:00Z"}}}}
    series = seed_series.until(end)
    assert not nodes.gate(s.registry, status, new, series)[0]  # no unseen day for the new one
    assert [r["version"] for r in nodes.gate_candidates(s.registry, status, new)] == [new["version"],
                                                                                      earlier["version"]]
    row, why = nodes.choose_push(s.registry, status, new, series)
    assert row is not None and row["version"] == earlier["version"], why
    assert f"3.0 days after the training end {iso(end - 3 * DAY)}" in why and "earlier version" in why
    assert old["version"] not in why
    # one day after: the earlier version has too few unseen days as well: nothing, with the new one's reason
    status_e = {"models": {name: {"active": {"version": earlier["version"], "sha256": earlier["sha256"],
                                             "activated_at": "2026-03-01T00:00:00Z"}}}}
    row, why = nodes.choose_push(s.registry, status_e, new, series)
    assert row is None and "only 0.0 days" in why, why
