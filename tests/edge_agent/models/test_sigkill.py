"""SIGKILL at any point of an upload leaves the old or the new model active, never a broken one."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time

from edge_agent.models.store import ModelStore
from shared.agent_client import AgentClient, ApiError
from shared.inference import LoadedModel
from tests.helpers.agent import spawn_agent, wait_for
from tests.helpers.models import TOKEN, agent_config
from tools.services import free_port


def test_sigkill_during_uploads(tmp_path, mosquitto_session, influxd_session, influx_db_name, server_keys, signed):
    port = free_port()
    cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys)
    cfg.write_text(cfg.read_text().replace("port = 0", f"port = {port}"))
    client = AgentClient(f"http://127.0.0.1:{port}", TOKEN, timeout=10)
    versions = [f"202601{d:02d}T000000Z" for d in range(1, 7)]
    bundles = [signed("lstm-96", v) for v in versions]
    rng = random.Random(7)
    pushed: list[str] = []
    for i, (version, bundle) in enumerate(zip(versions, bundles, strict=True)):
        proc = spawn_agent(cfg)
        try:
            wait_for(lambda: _up(client), timeout=30)
            before = client.status()["models"]["lstm-96"]["active"]
            # the recovered state is the last version that fully activated, or the one being pushed
            if before is not None:
                assert before["version"] in pushed[-1:] + [version]
            t = threading.Thread(target=lambda b=bundle: _push(client, b), daemon=True)
            t.start()
            time.sleep(rng.uniform(0.0, 0.25) if i < len(versions) - 1 else 3.0)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            t.join(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        store = ModelStore(tmp_path / "state" / "models")
        active = store.active("lstm-96")
        if active is not None:
            LoadedModel.from_dir(active.path)  # complete and loadable
            assert active.version in versions[: i + 1]
            if not pushed or pushed[-1] != active.version:
                pushed.append(active.version)
    # the last push had time to finish before the kill
    assert ModelStore(tmp_path / "state" / "models").active("lstm-96").version == versions[-1]
    assert not list((tmp_path / "state" / "models").glob("*/.tmp-*"))


def _up(client: AgentClient) -> bool:
    try:
        client.status()
        return True
    except ApiError:
        return False


def _push(client: AgentClient, bundle) -> None:
    with contextlib.suppress(ApiError):  # killed mid-request
        client.push(bundle)
