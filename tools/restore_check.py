"""Back up a live agent and server, restore both into fresh instances, and compare everything (make bench-restore;
a smaller run in tests/deploy/test_backup_restore.py).

The agent runs with retention, the flow and the model API on a real Mosquitto and influxd, takes `readings` meter
readings over MQTT and gets the server's signed bundles pushed through its API (twice: an active and a previous
version); the server's index, registry and key are made by its own code (build_state, Registry.add_run). Then
`edge_agent.backup.backup` and `server.backup.backup` (what `edge-agent backup` and `home-energy-server backup`
run), and restores into a new influxd, a new state directory and a new data_dir. Compared: every point of every
series in every retention policy (SELECT * … GROUP BY * on both databases), the model store (active and previous
version, sha256, every file's bytes), the server's versions index, registry files and signing key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tools.services import Influxd, Mosquitto

TOKEN = "restore-check-token-0123456789"


def _series(influx: Influxd, db: str) -> dict:
    """Every point of every measurement in every retention policy: {(rp, measurement): sorted rows}."""
    out = {}
    rps = [r[0] for r in influx.query("SHOW RETENTION POLICIES", db=db)["results"][0]["series"][0]["values"]]
    names = [r[0] for r in (influx.query("SHOW MEASUREMENTS", db=db)["results"][0].get("series") or [{"values": []}])
             [0]["values"]]
    for rp in rps:
        for m in names:
            res = influx.query(f'SELECT * FROM "{db}"."{rp}"."{m}" GROUP BY *', db=db)["results"][0]
            rows = sorted(json.dumps([s.get("tags"), dict(zip(s["columns"], v, strict=True))], sort_keys=True)
                          for s in res.get("series", []) for v in s["values"])
            if rows:
                out[f"{rp}.{m}"] = rows
    return out


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _agent_config(path: Path, state: Path, influx: Influxd, mqtt_port: int, public_key: str, dest: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
[agent]
state_dir = "{state}"
[mqtt]
port = {mqtt_port}
client_id = "restore-check-{state.name}"
subscribe = ["hack/#"]
[storage]
url = "{influx.url}"
database = "energy"
[spool]
batch_interval_s = 0.2
[retention]
raw_days = 30
delay_s = 0
[flow]
delay_s = 0
[[flow.devices]]
role = "grid"
measurement = "EnergyMeter"
tags = {{ device_id = "meter-1" }}
import_field = "EnergyIn"
[api]
bind = "127.0.0.1"
port = 0
token = "{TOKEN}"
public_key = "{public_key}"
max_bundle_bytes = 400000
[backup]
dir = "{dest}"
rpc = "127.0.0.1:{influx.rpc_port}"
[[rules]]
topic = "hack/+device/+channel"
format = "seed_json"
""")
    return path


def run(work: Path, bundles: Path, readings: int = 2000, log=print) -> dict:
    """The check; returns the bench's JSON (restored, series_equal, models_equal, server_equal, seconds, …)."""
    from edge_agent.agent import Agent
    from edge_agent.backup import backup as edge_backup
    from edge_agent.backup import restore as edge_restore
    from edge_agent.config import load_config
    from edge_agent.models.store import ModelStore
    from server.backup import backup as server_backup
    from server.backup import restore as server_restore
    from server.config import load_config as server_config
    from server.state import build_state
    from shared.agent_client import AgentClient
    from shared.schema import BUNDLE_NAMES
    from tools.publish import Publisher, seed_message
    from tools.services import wait_for_api

    t0 = time.monotonic()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker = Mosquitto(work / "mqtt").start()
    influx_a, influx_b = Influxd(work / "influx-a").start(), Influxd(work / "influx-b").start()
    agent = None
    try:
        # the server: index, key, a node and two registered runs of the bundles (made by its own code)
        scfg = server_config(None, data_dir=str(work / "server-a"), admin_password_hash="x", api_token=TOKEN)
        state = build_state(scfg)
        node_id = state.db.add_node("house", "http://127.0.0.1:1", TOKEN, {}, 0)
        runs = [state.registry.add_run([bundles / n for n in BUNDLE_NAMES if (bundles / n).is_dir()],
                                       f"node:{node_id}") for _ in range(2)]
        # the agent: readings over MQTT, both runs pushed (the second active, the first previous)
        cfg_path = _agent_config(work / "agent-a" / "agent.toml", work / "agent-a" / "state", influx_a, broker.port,
                                 state.keys.public_text, work / "backups-edge")
        agent = Agent(load_config(cfg_path), components=("retention", "flow", "api"))
        agent.start()
        api = agent.components["api"]
        client = AgentClient(api.url, TOKEN)
        wait_for_api(client)
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(seconds=10 * readings)
        msgs = [seed_message("meter-1", "c", "EnergyMeter", start + timedelta(seconds=10 * i),
                             {"EnergyIn": round(1000 + 0.001 * i, 4), "Power": float(200 + i % 50)})
                for i in range(readings)]
        pub = Publisher("127.0.0.1", broker.port, client_id="restore-check-pub")
        pub.publish_all(msgs)
        pub.close()
        deadline = time.monotonic() + 120
        while agent.health.get("stored") < readings and time.monotonic() < deadline:
            time.sleep(0.2)
        for run_rows in runs:
            for row in run_rows:
                client.push(Path(row["path"]))
        agent.components["flow"].run_once()
        agent.components["retention"].run_once()
        edge_folder = edge_backup(agent.config, work / "backups-edge", log=log)
        server_folder = server_backup(scfg, work / "backups-server", log=log)
        models_before = agent.ctx.models().store.status()
        agent.stop()
        agent = None

        # fresh instances: a new influxd, state directory, config path and server data_dir
        cfg_b = work / "agent-b" / "agent.toml"  # the backup's config, moved to the new machine's paths
        cfg_b.parent.mkdir(parents=True)
        cfg_b.write_text((edge_folder / "config" / "agent.toml").read_text()
                         .replace(str(work / "agent-a"), str(work / "agent-b")).replace(influx_a.url, influx_b.url))
        edge_restore(edge_folder, cfg_b, rpc=f"127.0.0.1:{influx_b.rpc_port}", log=log)
        scfg_b = server_config(None, data_dir=str(work / "server-b"), admin_password_hash="x", api_token=TOKEN)
        server_restore(server_folder, scfg_b, log=log)

        series_a, series_b = _series(influx_a, "energy"), _series(influx_b, "energy")
        store_b = ModelStore(work / "agent-b" / "state" / "models")
        models_equal = (store_b.status() == models_before and
                        _tree(work / "agent-a" / "state" / "models") == _tree(work / "agent-b" / "state" / "models")
                        and all((models_before.get(n) or {}).get("previous") for n in models_before))
        state_b = build_state(scfg_b)
        strip = lambda rows: [{k: v for k, v in r.items() if k != "path"} for r in rows]  # noqa: E731
        versions_a, versions_b = (strip(s.db.all("SELECT * FROM versions ORDER BY id")) for s in (state, state_b))
        paths_ok = all(Path(r["path"]).is_dir() and str(r["path"]).startswith(str(scfg_b.registry_dir))
                       for r in state_b.db.all("SELECT path FROM versions"))
        server_equal = (versions_a == versions_b and len(versions_a) > 0 and paths_ok
                        and _tree(scfg.registry_dir) == _tree(scfg_b.registry_dir)
                        and scfg.key_path.read_bytes() == scfg_b.key_path.read_bytes()
                        and state.keys.public_text == state_b.keys.public_text
                        and state.db.nodes()[0]["api_token"] == state_b.db.nodes()[0]["api_token"])
        points = sum(len(v) for v in series_a.values())
        return {"restored": True, "series_equal": series_a == series_b and points > readings,
                "models_equal": models_equal, "server_equal": server_equal,
                "seconds": round(time.monotonic() - t0, 1), "points": points, "series": sorted(series_a),
                "edge_backup_mb": round(json.loads((edge_folder / "manifest.json").read_text())["bytes"] / 1e6, 2),
                "models": sum(1 for m in models_before.values() if m.get("active")),
                "server_versions": len(versions_a)}
    finally:
        if agent is not None:
            agent.stop()
        for s in (influx_a, influx_b, broker):
            s.stop()
