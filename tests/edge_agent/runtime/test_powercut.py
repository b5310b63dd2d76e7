"""Power cuts (issue 24): a filesystem that forgets what was not synced (tools/powercut_fs.py) under the spool, the
flow's totals and the model store, and a short run of the random power-cut benchmark against the real agent,
broker and influxd (`make bench-powercut` runs 200 cycles)."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_agent.component import AgentContext
from edge_agent.config import load_config
from edge_agent.flow.component import Flow, parse_config
from edge_agent.flow.totals import TOTALS
from edge_agent.ingest.spool import Spool
from edge_agent.models.store import ModelStore
from edge_agent.runtime.durable import make_dirs
from edge_agent.runtime.health import Health
from edge_agent.runtime.timer import SlotTimer
from shared.points import Point
from shared.schema import SLOT_NS
from shared.storage import open_storage
from tests.edge_agent.flow.test_flow_db import FLOW
from tests.helpers.agent import write_config
from tools.benchmarks import bench_powercut
from tools.powercut_fs import PowercutFS

pytestmark = pytest.mark.skipif(not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")),
                                reason="needs FUSE (/dev/fuse, fusermount3: apt-get install fuse3)")

V1 = "20260101T000000Z"


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def test_the_filesystem_keeps_only_what_was_synced(tmp_path):
    with PowercutFS(tmp_path / "mnt", mode="drop") as fs:
        m = fs.mountpoint
        (m / "kept").write_bytes(b"a")
        with open(m / "kept", "r+b") as f:
            os.fsync(f.fileno())
        fsync_dir(m)
        (m / "unsynced").write_bytes(b"b")
        with open(m / "kept", "ab") as f:
            f.write(b"more")
        with open(m / "nameless", "wb") as f:  # data synced, name not: gone (the strict rule)
            f.write(b"c")
            f.flush()
            os.fsync(f.fileno())
        fs.cut()
        assert sorted(os.listdir(m)) == ["kept"] and (m / "kept").read_bytes() == b"a"
        with open(m / "kept", "ab") as f:
            f.write(b"b")
        fs.cut("none")
        assert (m / "kept").read_bytes() == b"ab"
    with PowercutFS(tmp_path / "mnt2", mode="drop", journal=True) as fs:
        m = fs.mountpoint
        (m / "a").write_bytes(b"x")
        with open(m / "b", "wb") as f:  # ext4: the fsync commits both names, the data of b only
            f.write(b"y")
            f.flush()
            os.fsync(f.fileno())
        fs.cut()
        assert (m / "a").read_bytes() == b"" and (m / "b").read_bytes() == b"y"


def test_the_first_spool_segment_survives_a_power_cut(tmp_path):
    """Issue 24: the first segment (and the spool directory) were created without a directory fsync, so a cut
    could lose the name of a file whose acknowledged records had been fsynced."""
    with PowercutFS(tmp_path / "mnt", mode="drop") as fs:
        spool = Spool(fs.mountpoint / "state" / "spool")
        for i in range(3):
            spool.append([Point("m", {}, {"v": float(i)}, i + 1)])  # fsynced: these would be acknowledged
        spool.close()
        fs.cut()
        spool = Spool(fs.mountpoint / "state" / "spool")
        assert spool.pending_points == 3
        spool.close()


def test_flow_totals_survive_a_power_cut(tmp_path, mosquitto_session, influxd_session):
    """Issue 24: flow_totals.json was replaced without fsync: a cut reset or reverted totals that Home Assistant
    had already been sent (it then counts the energy again, or loses it)."""
    with PowercutFS(tmp_path / "mnt", mode="drop") as fs:
        cfg_path = write_config(tmp_path, mosquitto_session.port, influxd_session.url, "unused", extra=FLOW)
        cfg_path.write_text(cfg_path.read_text().replace(f'state_dir = "{tmp_path / "state"}"',
                                                         f'state_dir = "{fs.mountpoint / "state"}"'))
        config = load_config(cfg_path)
        now = datetime(2024, 3, 1, tzinfo=UTC)
        clock = lambda: now  # noqa: E731

        def flow() -> Flow:
            ctx = AgentContext(config=config, health=Health(), publish=lambda *a, **k: None,
                               open_storage=lambda: open_storage(config.storage), timer=SlotTimer(clock),
                               clock=clock)
            return Flow(parse_config(config), ctx)

        make_dirs(config.state_dir)  # as the agent does at start
        first = flow()
        ends = int((now - timedelta(days=1)).timestamp()) * 10**9 // SLOT_NS * SLOT_NS + SLOT_NS * np.arange(8)
        first._count_totals({int(t): dict.fromkeys(TOTALS, 0.25) for t in ends}, None, int(ends[-1]))
        published = dict(first.totals.published), first.totals.until
        first.stop()
        fs.cut()
        again = flow()
        assert (again.totals.published, again.totals.until) == published
        assert again.totals.published["house"] == pytest.approx(2.0)
        again.stop()


def test_an_activated_model_survives_a_power_cut(tmp_path, signed):
    with PowercutFS(tmp_path / "mnt", mode="drop") as fs:
        bundle = signed("cnn-1", V1)
        files = tuple((bundle / f).read_bytes() for f in ("manifest.json", "model.tflite", "signature.json"))
        ModelStore(fs.mountpoint / "models").activate("cnn-1", V1, *files)
        fs.cut()
        store = ModelStore(fs.mountpoint / "models")
        entry = store.active("cnn-1")
        assert entry is not None and entry.version == V1
        store.check(entry)


@pytest.mark.timeout(180)
def test_random_power_cuts_lose_nothing_acknowledged(tmp_path):
    result = bench_powercut.run(cycles=6, seed=11, workdir=tmp_path)
    details = result.pop("details")
    assert result == {"cycles": 6, "acked_lost": 0, "unreadable": 0, "duplicates": 0}, details
    assert details["readings"] > 100 and details["bad_messages"] > 0
