"""Command line: `run` the agent, `check` a configuration (and connectivity unless --offline), `rules` (test a
message against the rules, list them, sniff the broker: edge_agent/ingest/rulescli.py), `models`."""

from __future__ import annotations

import argparse
import importlib
import socket
import sys
import threading

from edge_agent import __version__
from edge_agent.config import AgentConfig, ConfigError, load_config


def _check_connectivity(cfg: AgentConfig) -> list[str]:
    """Problems reaching the broker and the database (empty list: all good)."""
    from edge_agent.ingest.pipeline import make_client
    from shared.storage import StorageError, open_storage

    problems = []
    try:
        st = open_storage(cfg.storage)
        if not st.ping():
            problems.append(f"database at {cfg.storage.url} does not answer /ping")
        else:
            try:
                st.query("SHOW DATABASES" if cfg.storage.version == 1 else "buckets() |> limit(n: 1)")
            except StorageError as exc:
                problems.append(f"database at {cfg.storage.url} refuses queries: {exc}")
        st.close()
    except Exception as exc:
        problems.append(f"database: {exc}")
    try:
        socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=5).close()
        client = make_client(cfg, f"{cfg.mqtt.client_id}-check", manual_ack=False)
        result: dict = {}
        done = threading.Event()

        def on_connect(c, userdata, flags, reason, properties=None):
            result["rc"] = reason
            done.set()

        client.on_connect = on_connect
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=10)
        client.loop_start()
        done.wait(5)
        client.disconnect()
        client.loop_stop()
        reason = result.get("rc")
        if reason is None or reason.is_failure:
            problems.append(f"MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port} refused the connection: "
                            f"{reason or 'no answer'}")
    except OSError as exc:
        problems.append(f"MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port} unreachable: {exc}")
    return problems


def cmd_check(args) -> int:
    try:
        cfg = load_config(args.config)
        from edge_agent.agent import COMPONENTS

        for spec in COMPONENTS:  # each component validates its own section
            spec.parse(cfg)
        from edge_agent.backup import parse_config as parse_backup
        from edge_agent.runtime.problems import parse_config as parse_alerts

        parse_backup(cfg)
        parse_alerts(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(f"config OK: {len(cfg.rules)} rule(s), storage InfluxDB {cfg.storage.version}.x at {cfg.storage.url}, "
          f"broker {cfg.mqtt.host}:{cfg.mqtt.port}, state in {cfg.state_dir}")
    if args.offline:
        return 0
    problems = _check_connectivity(cfg)
    for p in problems:
        print(f"connectivity error: {p}", file=sys.stderr)
    if not problems:
        print("connectivity OK: broker and database answer")
    return 1 if problems else 0


def cmd_run(args) -> int:
    from edge_agent.agent import Agent
    from edge_agent.runtime.logsetup import setup_logging

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    log_file = cfg.resolve(cfg.logging.file) if cfg.logging.file else None
    setup_logging(args.log_level or cfg.logging.level, log_file, cfg.logging.max_bytes, cfg.logging.backups)
    try:
        agent = Agent(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return agent.run_forever()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge_agent", description="home-energy edge agent")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", required=True, help="TOML or YAML configuration file")
    run.add_argument("--log-level", help="override logging.level (DEBUG, INFO, …)")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the configuration and connectivity")
    check.add_argument("--config", required=True)
    check.add_argument("--offline", action="store_true", help="validate the configuration only")
    check.set_defaults(func=cmd_check)
    from edge_agent.backup import add_subcommands as add_backup

    add_backup(sub)
    _add_extensions(sub)
    return parser


def _add_extensions(sub) -> None:
    """Subcommands contributed by other modules: `rules` (edge_agent.ingest.rulescli) and `models`
    (edge_agent.models.cli). A bare install (the package without its `edge` extra) still answers `--version`
    and `check`; an extension whose dependency is missing says which one instead of vanishing."""
    for name, module in (("rules", "edge_agent.ingest.rulescli"), ("models", "edge_agent.models.cli")):
        try:
            add_subcommand = importlib.import_module(module).add_subcommand
        except ModuleNotFoundError as e:
            _add_unavailable(sub, name, e.name or str(e))
            continue
        add_subcommand(sub)


def _add_unavailable(sub, name: str, missing: str) -> None:
    def explain(_args: argparse.Namespace) -> int:
        print(f"edge-agent {name}: needs the Python package {missing!r}, which is not installed "
              "(install the edge extra: pip install 'home-energy[edge]')", file=sys.stderr)
        return 2

    cmd = sub.add_parser(name, help=f"(unavailable: {missing} is not installed)")
    cmd.add_argument("rest", nargs=argparse.REMAINDER)
    cmd.set_defaults(func=explain)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
