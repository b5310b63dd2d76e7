"""`edge-agent backup` / `edge-agent restore`: the Pi's database, state, models and config in one folder.

A backup is a folder `edge-<host>-<UTC time>` under the destination (a USB disk, a NAS mount; or, through the model
API, pulled by the server):
- `influxdb/`: InfluxDB's portable backup of the database (`influxd backup -portable -db energy -host <rpc>`: every
  retention policy, shard by shard, made by InfluxDB itself while it runs — a copy of its files would not be
  consistent). InfluxDB 2.x: `influx backup` is not run here (untested: no 2.x server on the development machine).
- `state/`: the model store (active and previous version of every bundle, with their state), `flow_totals.json`
  and the agent's other small state files. Not the spool (empty while the database is up) nor the dead letters.
- `config/`: the agent's configuration; the secret files it names (`*_file`) only with `--secrets`.
- `manifest.json` (written last): what it holds and the sha256 of every file. The folder is written under a
  `.partial-` name and renamed once complete, so a cut leaves no folder that looks like a backup.
After a good backup the oldest ones beyond `keep` are removed, and `<state_dir>/backup.json` records it: the agent
reports the age of the last good backup (status, Home Assistant, the server) and warns after 48 h.

`restore` checks every sha256 first, then restores the database into an InfluxDB that does not have it yet
(`influxd restore -portable`), the state into the configured state directory (refusing to overwrite models unless
`--force`), and writes the config where `--config` points when no file is there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_agent import __version__
from edge_agent.config import AgentConfig, ConfigError, at_least_one, build_dataclass, load_config, setting
from edge_agent.runtime.durable import replace_file
from shared.backupfolder import MANIFEST, file_hashes, verify_folder

STATUS_FILE = "backup.json"
KIND = "edge-agent-backup"
STATE_FILES = ("flow_totals.json",)  # small state beside the model store (missing ones are skipped)


@dataclass
class BackupConfig:
    dir: str = ""  # destination folder (a USB disk, a NAS mount); the command line may give another
    keep: int = setting(7, check=at_least_one, wants="at least 1")  # good backups kept in the destination
    rpc: str = "127.0.0.1:8088"  # InfluxDB's backup RPC (bind-address in influxdb.conf; loopback only)
    influxd: str = "influxd"  # the binary that talks to it
    secrets: bool = False  # copy the secret files the config names (keep such a backup safe)
    timeout_s: float = 3600.0


def parse_config(cfg: AgentConfig) -> BackupConfig:
    return build_dataclass(BackupConfig, cfg.section("backup"), f"{cfg.path}: [backup]")


def expected(cfg: AgentConfig) -> bool:
    """Backups are expected (and their absence is a problem) once [backup] names a destination."""
    return bool(cfg.section("backup").get("dir"))


def read_status(state_dir: Path, now: float | None = None) -> dict:
    """The last good backup: {"last_ok", "age_s", "path", "bytes", "seconds"}; {} when there is none."""
    try:
        doc = json.loads((state_dir / STATUS_FILE).read_text())
        t = datetime.fromisoformat(doc["last_ok"].replace("Z", "+00:00")).timestamp()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return {**{k: doc.get(k) for k in ("last_ok", "path", "bytes", "seconds")},
            "age_s": round((now or time.time()) - t, 1)}



def _secret_files(cfg: AgentConfig) -> list[Path]:
    out = []
    for section in cfg.raw.values():
        if isinstance(section, dict):
            for key, value in section.items():
                if key.endswith("_file") and isinstance(value, str) and value and not key.startswith("tls_cert"):
                    p = Path(value) if Path(value).is_absolute() else cfg.path.parent / value
                    if p.is_file():
                        out.append(p)
    return out


def backup(cfg: AgentConfig, dest: Path, keep: int | None = None, secrets: bool | None = None,
           log=print) -> Path:
    """Make one backup folder in dest; returns it. Raises RuntimeError naming what failed."""
    bc = parse_config(cfg)
    keep = keep or bc.keep
    secrets = bc.secrets if secrets is None else secrets
    t0 = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"edge-{socket.gethostname()}-{stamp}"
    dest.mkdir(parents=True, exist_ok=True)
    work = dest / f".partial-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    try:
        db = cfg.storage.database
        if cfg.storage.version == 1:
            log(f"backing up database {db} through {bc.rpc} …")
            cmd = [bc.influxd, "backup", "-portable", "-db", db, "-host", bc.rpc, str(work / "influxdb")]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=bc.timeout_s)
            if r.returncode != 0:
                raise RuntimeError(f"influxd backup failed (exit {r.returncode}): {(r.stderr or r.stdout)[-500:]}")
        state = work / "state"
        state.mkdir()
        from edge_agent.component import models_dir

        models = cfg.resolve(models_dir(cfg))
        if models.is_dir():
            shutil.copytree(models, state / "models", ignore=shutil.ignore_patterns(".tmp-*", "*.tmp"))
        for f in STATE_FILES:
            if (cfg.state_dir / f).is_file():
                shutil.copy2(cfg.state_dir / f, state / f)
        conf = work / "config"
        conf.mkdir()
        shutil.copy2(cfg.path, conf / cfg.path.name)
        if secrets:
            (conf / "secrets").mkdir(mode=0o700)
            for p in _secret_files(cfg):
                shutil.copy2(p, conf / "secrets" / p.name)
        files = file_hashes(work)
        manifest = {"kind": KIND, "format": 1, "created": stamp, "host": socket.gethostname(),
                    "agent_version": __version__, "database": db, "storage_version": cfg.storage.version,
                    "config": cfg.path.name, "config_path": str(cfg.path), "secrets": bool(secrets),
                    "files": files, "bytes": sum((work / f).stat().st_size for f in files)}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        final = dest / name
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = round(time.monotonic() - t0, 2)
    _prune(dest, keep, log)
    status = {"last_ok": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "path": str(final),
              "bytes": manifest["bytes"], "seconds": seconds}
    replace_file(cfg.state_dir / STATUS_FILE, (json.dumps(status) + "\n").encode(), mode=0o644)  # the agent reads it
    log(f"backup {final} ({manifest['bytes'] / 1e6:.1f} MB, {len(files)} files) in {seconds} s"
        + ("; it holds the secrets: keep it safe" if secrets else ""))
    return final


def _prune(dest: Path, keep: int, log) -> None:
    done = sorted(p for p in dest.glob("edge-*") if (p / MANIFEST).is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
        log(f"removed the old backup {old.name} (keeping {keep})")


def verify(folder: Path) -> dict:
    """The manifest, after checking that every file it lists is there with its sha256 (ValueError otherwise)."""
    return verify_folder(folder, KIND, "an edge-agent backup")


def restore(folder: Path, config_path: Path, rpc: str | None = None, influxd: str | None = None,
            force: bool = False, log=print) -> dict:
    """Restore a backup folder onto this machine (see the module's docstring)."""
    manifest = verify(folder)
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / "config" / manifest["config"], config_path)
        log(f"config written to {config_path}")
        secrets = folder / "config" / "secrets"
        if secrets.is_dir():
            for p in secrets.iterdir():
                target = config_path.parent / p.name
                if not target.exists():
                    shutil.copy2(p, target)
                    os.chmod(target, 0o600)
                    log(f"secret file written to {target}")
    cfg = load_config(config_path)
    bc = parse_config(cfg)
    from edge_agent.component import models_dir

    models = cfg.resolve(models_dir(cfg))
    if models.is_dir() and any(models.iterdir()) and not force:
        raise RuntimeError(f"{models} already holds models: restore with --force to replace them")
    if (folder / "influxdb").is_dir():
        log(f"restoring database {manifest['database']} through {rpc or bc.rpc} …")
        cmd = [influxd or bc.influxd, "restore", "-portable", "-db", manifest["database"],
               "-newdb", cfg.storage.database, "-host", rpc or bc.rpc, str(folder / "influxdb")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=bc.timeout_s)
        if r.returncode != 0:
            raise RuntimeError(f"influxd restore failed (exit {r.returncode}): {(r.stderr or r.stdout)[-500:]} "
                               "(the target InfluxDB must not have the database yet)")
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (folder / "state" / "models").is_dir():
        shutil.rmtree(models, ignore_errors=True)
        shutil.copytree(folder / "state" / "models", models)
    for f in STATE_FILES:
        if (folder / "state" / f).is_file():
            shutil.copy2(folder / "state" / f, cfg.state_dir / f)
    log(f"restored {folder.name} (made {manifest['created']} by agent {manifest['agent_version']})")
    return manifest


def add_subcommands(sub) -> None:
    b = sub.add_parser("backup", help="back up the database, models, state and config into a folder")
    b.add_argument("--config", required=True)
    b.add_argument("--to", help="destination folder (default: [backup] dir)")
    b.add_argument("--keep", type=int, help="good backups kept there (default: [backup] keep, 7)")
    b.add_argument("--secrets", action="store_true", help="also copy the secret files the config names")
    b.set_defaults(func=_cmd_backup)
    r = sub.add_parser("restore", help="restore a backup folder (database into an InfluxDB without it)")
    r.add_argument("--from", dest="source", required=True, help="the backup folder (edge-<host>-<time>)")
    r.add_argument("--config", required=True, help="the agent's config (written from the backup if missing)")
    r.add_argument("--rpc", help="InfluxDB's backup RPC host:port (default: [backup] rpc)")
    r.add_argument("--force", action="store_true", help="replace the models in the state directory")
    r.set_defaults(func=_cmd_restore)


def _cmd_backup(args) -> int:
    try:
        cfg = load_config(args.config)
        dest = args.to or parse_config(cfg).dir
        if not dest:
            print("backup: give --to DIR or set [backup] dir", file=sys.stderr)
            return 2
        backup(cfg, Path(dest), args.keep, True if args.secrets else None)
    except (ConfigError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_restore(args) -> int:
    try:
        restore(Path(args.source), Path(args.config), args.rpc, force=args.force)
    except (ConfigError, RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
        return 1
    return 0
