"""`home-energy-server backup` / `restore`: the registry, the SQLite index and the signing key in one folder.

A backup is `server-<UTC time>/` under the destination, written as `.partial-…` and renamed when complete:
- `server.sqlite`: SQLite's online backup of the index (nodes with their tokens and InfluxDB credentials, versions,
  jobs, pushes, alerts), consistent while gunicorn and the job worker run;
- `registry/`: every signed bundle (manifest, model, signature) and its plot;
- `keys/signing.key` (+ `secret_key`, the session key): **the private signing key**. Whoever has it can sign
  models every agent of this server accepts; whoever loses it can push no new model until every agent is given a
  new public key (`[api] public_key`). Keep backups on an encrypted disk you control, never in a shared folder.
- `manifest.json`: what it holds, the data_dir it came from, the public key and the sha256 of every file.
Pulled histories (`cache/`) and uploads are not included: a pull fetches them again. Oldest backups beyond `keep`
are removed after a good one.

`restore` checks every sha256, refuses a data_dir that already has an index (unless `--force`), copies the files
back with private modes, and points the index's version paths at the new registry.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from server.config import ServerConfig
from server.files import private_dir
from shared.backupfolder import MANIFEST, file_hashes, verify_folder

KIND = "home-energy-server-backup"
KEY_WARNING = ("this backup holds the server's private signing key: anyone with it can sign models your agents "
               "accept; keep it on an encrypted disk you control. Losing the key means re-keying every agent "
               "([api] public_key) before a new model can be pushed.")



def backup(cfg: ServerConfig, dest: Path, keep: int = 7, log=print) -> Path:
    from shared.signing import load_private_key

    t0 = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    private_dir(dest)
    work = dest / f".partial-server-{stamp}"
    shutil.rmtree(work, ignore_errors=True)
    private_dir(work)
    try:
        src = sqlite3.connect(cfg.db_path)
        out = sqlite3.connect(work / "server.sqlite")
        with out:
            src.backup(out)
        src.close()
        out.close()
        if cfg.registry_dir.is_dir():
            shutil.copytree(cfg.registry_dir, work / "registry")
        private_dir(work / "keys")
        shutil.copy2(cfg.key_path, work / "keys" / cfg.key_path.name)
        if (cfg.data_dir / "secret_key").is_file():
            shutil.copy2(cfg.data_dir / "secret_key", work / "secret_key")
        files = file_hashes(work)
        manifest = {"kind": KIND, "format": 1, "created": stamp, "data_dir": str(cfg.data_dir),
                    "public_key": load_private_key(cfg.key_path).public_text, "files": files,
                    "bytes": sum((work / f).stat().st_size for f in files)}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        for p in work.rglob("*"):
            p.chmod(0o700 if p.is_dir() else 0o600)
        final = dest / f"server-{stamp}"
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for old in sorted(p for p in dest.glob("server-*") if (p / MANIFEST).is_file())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
        log(f"removed the old backup {old.name} (keeping {keep})")
    log(f"backup {final} ({manifest['bytes'] / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
    log(f"WARNING: {KEY_WARNING}")
    return final


def verify(folder: Path) -> dict:
    """The manifest, after checking that every file it lists is there with its sha256 (ValueError otherwise)."""
    return verify_folder(folder, KIND, "a home-energy server backup")


def restore(folder: Path, cfg: ServerConfig, force: bool = False, log=print) -> dict:
    manifest = verify(folder)
    if cfg.db_path.exists() and not force:
        raise RuntimeError(f"{cfg.data_dir} already has an index: restore with --force to replace it "
                           "(stop the server first)")
    private_dir(cfg.data_dir)
    for name in ("server.sqlite-wal", "server.sqlite-shm"):
        (cfg.data_dir / name).unlink(missing_ok=True)
    shutil.copy2(folder / "server.sqlite", cfg.db_path)
    if (folder / "registry").is_dir():
        shutil.rmtree(cfg.registry_dir, ignore_errors=True)
        shutil.copytree(folder / "registry", cfg.registry_dir)
    private_dir(cfg.key_path.parent)
    shutil.copy2(folder / "keys" / cfg.key_path.name, cfg.key_path)
    if (folder / "secret_key").is_file():
        shutil.copy2(folder / "secret_key", cfg.data_dir / "secret_key")
    for p in [cfg.db_path, cfg.key_path, cfg.data_dir / "secret_key", *cfg.registry_dir.rglob("*")]:
        if p.exists():
            p.chmod(0o700 if p.is_dir() else 0o600)
    old, new = manifest["data_dir"].rstrip("/") + "/registry/", str(cfg.registry_dir).rstrip("/") + "/"
    if old != new:
        with sqlite3.connect(cfg.db_path) as c:
            c.execute("UPDATE versions SET path = ? || substr(path, ?) WHERE substr(path, 1, ?) = ?",
                      (new, len(old) + 1, len(old), old))
    log(f"restored {folder.name} into {cfg.data_dir} (public key {manifest['public_key']})")
    log(f"WARNING: {KEY_WARNING}")
    return manifest


def main(args) -> int:
    from server.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
        if args.cmd == "backup":
            backup(cfg, Path(args.to), args.keep)
        else:
            restore(Path(args.source), cfg, args.force)
    except (ConfigError, RuntimeError, ValueError, OSError, sqlite3.Error) as exc:
        print(f"{args.cmd} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def add_subcommands(sub) -> None:
    b = sub.add_parser("backup", help="back up the registry, the index and the signing key into a folder")
    b.add_argument("--config")
    b.add_argument("--to", required=True, help="destination folder (an encrypted disk: it holds the signing key)")
    b.add_argument("--keep", type=int, default=7, help="good backups kept there (default 7)")
    r = sub.add_parser("restore", help="restore a server backup folder into the configured data_dir")
    r.add_argument("--config")
    r.add_argument("--from", dest="source", required=True)
    r.add_argument("--force", action="store_true", help="replace an existing index (stop the server first)")
