"""Command line: `run` the agent, `check` a configuration (and, unless --offline, that the state_dir is writable by
the user who will run the agent and that the broker and the database answer), `rules` (test a
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
    from edge_agent.runtime.mqtt_client import make_client
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


SERVICE_USER = "edge-agent"  # the systemd unit's user (ansible/roles/edge_agent: edge_agent_user)


def _user(name: str | None) -> tuple[str, int, list[int]]:
    """(name, uid, group ids) of the user who will run the agent: `name`, else the packaged service's user when
    this runs as root and that user exists, else whoever runs this."""
    import os
    import pwd

    if name is None and os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
            name = SERVICE_USER
        except KeyError:
            pass
    try:
        pw = pwd.getpwnam(name) if name else pwd.getpwuid(os.geteuid())
    except KeyError:
        raise ValueError(f"--user {name!r}: no such user") from None
    return pw.pw_name, pw.pw_uid, os.getgrouplist(pw.pw_name, pw.pw_gid)


def _may(st, uid: int, gids: list[int], bits: str) -> bool:
    """Whether uid (in gids) has the permissions `bits` ("wx", "x", "w") on a file with stat `st` (mode bits;
    ACLs are not read)."""
    import stat as s

    if uid == 0:
        return True
    table = ((s.S_IRUSR, s.S_IWUSR, s.S_IXUSR) if st.st_uid == uid else
             (s.S_IRGRP, s.S_IWGRP, s.S_IXGRP) if st.st_gid in gids else (s.S_IROTH, s.S_IWOTH, s.S_IXOTH))
    need = {"r": table[0], "w": table[1], "x": table[2]}
    return all(st.st_mode & need[b] for b in bits)


def check_state_dir(state_dir, user: str | None = None) -> tuple[str, list[str]]:
    """Whether the user who will run the agent can create and write its state (spool, models, totals, log):
    (the user's name, problems). A state_dir that does not exist yet must be creatable in its nearest parent."""
    from pathlib import Path

    name, uid, gids = _user(user)
    problems = []
    path = Path(state_dir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    for ancestor in reversed(existing.parents):  # every directory above must be searchable
        if not _may(ancestor.stat(), uid, gids, "x"):
            problems.append(f"{ancestor} is not searchable by {name} (needed to reach state_dir {path})")
            return name, problems
    st = existing.stat()
    how = f"owner uid {st.st_uid}, group gid {st.st_gid}, mode {st.st_mode & 0o777:04o}"
    if not existing.is_dir():
        problems.append(f"state_dir {path}: {existing} is not a directory")
    elif not _may(st, uid, gids, "wx"):
        what = "state_dir" if existing == path else f"state_dir {path} does not exist and its parent"
        fix = f"sudo install -d -o {name} -m 0700 {path}"
        problems.append(f"{what} {existing} is not writable by {name} ({how}): {fix}")
    elif existing == path:
        for child in sorted(path.iterdir()):  # what an earlier run (e.g. as root) left behind
            cst = child.lstat()
            if not _may(cst, uid, gids, "wx" if child.is_dir() else "w"):
                problems.append(f"{child} is not writable by {name} (owner uid {cst.st_uid}, mode "
                                f"{cst.st_mode & 0o777:04o}): sudo chown -R {name} {path}")
    return name, problems


def cmd_check(args) -> int:
    try:
        cfg = load_config(args.config)
        from edge_agent.agent import COMPONENTS
        from edge_agent.ingest.rules import load_rules

        rules = load_rules(cfg)

        for spec in COMPONENTS:  # each component validates its own section
            spec.parse(cfg)
        from edge_agent.backup import parse_config as parse_backup
        from edge_agent.runtime.problems import parse_config as parse_alerts

        parse_backup(cfg)
        parse_alerts(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(f"config OK: {len(rules)} rule(s), storage InfluxDB {cfg.storage.version}.x at {cfg.storage.url}, "
          f"broker {cfg.mqtt.host}:{cfg.mqtt.port}, state in {cfg.state_dir}")
    if args.offline:
        return 0
    try:
        user, state_problems = check_state_dir(cfg.state_dir, args.user)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in state_problems:
        print(f"state error: {p}", file=sys.stderr)
    if not state_problems:
        print(f"state OK: {cfg.state_dir} is writable by {user}")
    problems = _check_connectivity(cfg)
    for p in problems:
        print(f"connectivity error: {p}", file=sys.stderr)
    if not problems:
        print("connectivity OK: broker and database answer")
    return 1 if problems or state_problems else 0


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
    parser = argparse.ArgumentParser(prog="edge-agent", description="home-energy edge agent (also: python -m edge_agent)")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", required=True, help="TOML or YAML configuration file")
    run.add_argument("--log-level", help="override logging.level (DEBUG, INFO, …)")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the configuration and connectivity")
    check.add_argument("--config", required=True)
    check.add_argument("--offline", action="store_true", help="validate the configuration only")
    check.add_argument("--user", help="the user who will run the agent (default: the service user "
                                      f"{SERVICE_USER!r} when run as root and it exists, else you): state_dir must "
                                      "be writable by it")
    check.set_defaults(func=cmd_check)
    from edge_agent.backup import add_subcommands as add_backup

    add_backup(sub)
    _add_extensions(sub)
    return parser


def _add_extensions(sub) -> None:
    """Subcommands contributed by other modules: `rules` (edge_agent.ingest.rulescli), `models`
    (edge_agent.models.cli) and `raw-budget` (edge_agent.retention.budget). A bare install (the package without its
    `edge` extra) still answers `--version` and `check`; an extension whose dependency is missing says which one
    instead of vanishing."""
    for name, module in (("rules", "edge_agent.ingest.rulescli"), ("models", "edge_agent.models.cli"),
                         ("raw-budget", "edge_agent.retention.budget")):
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
