"""Server configuration: a TOML file plus environment overrides; secrets by the shared rule (shared/secrets.py).

Every key is checked by the validator both halves share (shared/config.py): an unknown key (a typo), a value of the
wrong type or out of range is a ConfigError naming the key, so a setting is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from server.files import locked, private_dir, private_file, write_private
from shared.config import ConfigError, build_dataclass, setting
from shared.secrets import read_secret

__all__ = ["ConfigError", "JobsConfig", "NotifyConfig", "ServerConfig", "load_config"]


SECRETS = ("admin_password_hash", "api_token", "secret_key")
SECRET_KEYS = frozenset(f"{k}{suffix}" for k in SECRETS for suffix in ("", "_file", "_env"))


def _positive(v) -> bool:
    return v > 0


@dataclass
class JobsConfig:
    """[jobs]: trainings run as Ray tasks — on a Ray started inside the job worker at its first training
    (`ray_address` empty), or on the cluster at `ray_address` (host:port of `ray start --head`)."""

    ray_address: str = setting("", check=lambda v: not v or re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}", v),
                               wants="host:port (of `ray start --head`)")
    ray_auth_token_file: str = ""  # the cluster's token (Ray's token auth); embedded: generated in data_dir
    ray_temp_dir: str = ""  # embedded Ray's session files (default: Ray's, /tmp/ray)
    embedded_cpus: int = setting(0, check=lambda v: v >= 0, wants="≥ 0 (0: every core)")
    cpus_per_job: float = setting(1.0, check=_positive, wants="> 0")
    memory_mb_per_job: int = setting(0, check=lambda v: v >= 0, wants="≥ 0 (0: no reservation)")
    max_concurrent: int = setting(0, check=lambda v: v >= 0, wants="≥ 0 (0: what the cluster holds)")
    pull_concurrency: int = setting(4, check=_positive, wants="≥ 1")
    poll_concurrency: int = setting(8, check=_positive, wants="≥ 1")
    skill_poll_s: float = setting(3600.0, check=lambda v: v >= 0, wants="≥ 0 (0: off)")


@dataclass
class NotifyConfig:
    """[notify]: apprise URLs (they hold tokens: put them in `urls_file`, 0600) and when a house is reported
    (server/notify.py)."""

    urls: list[str] = setting(default_factory=list, check=all,
                              wants="a list of apprise URLs (ntfy://…, mailtos://…, json://…)")
    urls_file: str = setting("", check=bool, wants="a file with one apprise URL per line")
    # the agent has not answered for this long: "stopped reporting"
    stale_after_s: float = setting(1800.0, check=_positive, wants="> 0")
    # its newest forecast is this old: "stopped forecasting"
    forecast_after_s: float = setting(7200.0, check=_positive, wants="> 0")
    backup_after_s: float = setting(2 * 86400.0, check=_positive, wants="> 0")  # its last good backup is this old
    agent_problems: bool = True  # also the problems the agent reports itself (its `problem` sensor)
    resolved: bool = True  # say so when a problem is over


@dataclass
class ServerConfig:
    data_dir: Path = setting(Path("var/server"), check=bool, wants="a directory")
    admin_user: str = setting("admin", check=lambda v: bool(v.strip()), wants="a non-empty name")
    admin_password_hash: str | None = None
    api_token: str | None = None
    secret_key: str = ""
    session_cookie_secure: bool = True
    python: str = setting(sys.executable, check=bool, wants="a Python executable")
    training_epochs: int = setting(40, check=_positive, wants="≥ 1")
    status_poll_s: float = setting(60.0, check=_positive, wants="> 0")
    login_attempts: int = setting(5, check=_positive, wants="≥ 1")
    login_account_attempts: int = setting(20, check=lambda v: v >= 0, wants="≥ 0 (0: off)")
    login_window_s: float = setting(300.0, check=_positive, wants="> 0")
    trusted_proxies: int = setting(0, check=lambda v: 0 <= v <= 5, wants="between 0 and 5")
    training_data_dirs: list[Path] = setting(default_factory=list, check=all, wants="a list of directories")
    # retention (server/retention.py): per house or group the newest training runs kept besides those a node has
    # active or as previous; per house the newest history pulls kept
    keep_runs: int = setting(10, check=lambda v: v >= 0, wants="≥ 0 (0: keep every run)")
    keep_pulls: int = setting(3, check=lambda v: v >= 0, wants="≥ 0 (0: keep every pull)")
    jobs: JobsConfig = field(default_factory=JobsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "server.sqlite"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "keys" / "signing.key"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def uploads_dir(self) -> Path:
        """Where an operator puts CSV files to train on (besides the pulled ones in cache/)."""
        return self.data_dir / "uploads"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def _secret(doc: dict, key: str, base: Path, where: str) -> str | None:
    """The shared rule (shared/secrets.py): `<key>_file`, else the variable named by `<key>_env` (default
    `SERVER_<KEY>`), else `<key>`. A relative `<key>_file` is relative to the config file's directory."""
    file = Path(doc[f"{key}_file"]) if doc.get(f"{key}_file") else None
    file = base / file if file is not None and not file.is_absolute() else file
    try:
        return read_secret(doc.get(key), str(file) if file else None, doc.get(f"{key}_env") or f"SERVER_{key.upper()}")
    except OSError as exc:
        raise ConfigError(f"{where}: {key}_file: cannot read {file}: {exc.strerror}") from None


def _read_toml(path: str | Path | None) -> tuple[dict, Path, str]:
    """The file's keys, the directory relative paths start from, and how errors name the file."""
    if not path:
        return {}, Path.cwd(), "server config"
    path = Path(path)
    where = f"server config {path}"
    try:
        return tomllib.loads(path.read_text()), path.parent, where
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _data_dir(doc: dict, base: Path, where: str) -> Path:
    """`$SERVER_DATA_DIR`, else `data_dir`, else var/server; created 0700."""
    data_dir = Path(os.environ.get("SERVER_DATA_DIR") or doc.get("data_dir") or "var/server")
    data_dir = data_dir if data_dir.is_absolute() else (base / data_dir)
    try:
        private_dir(data_dir)
    except OSError as exc:
        raise ConfigError(f"{where}: data_dir: cannot create {data_dir}: {exc.strerror}") from None
    return data_dir.resolve()


def _secrets(doc: dict, base: Path, data_dir: Path, where: str) -> dict:
    """The three secrets, checked; the session key is generated in data_dir when none is given."""
    out = {key: _secret(doc, key, base, where) for key in SECRETS}
    if not out["admin_password_hash"]:
        raise ConfigError(f"{where}: admin_password_hash is required (python -m server hash-password; put the hash in the "
                          "config, a file named by admin_password_hash_file, or SERVER_ADMIN_PASSWORD_HASH)")
    if out["api_token"] is not None and len(out["api_token"]) < 16:
        raise ConfigError(f"{where}: api_token must have at least 16 characters")
    if out["secret_key"] is not None and len(out["secret_key"]) < 16:
        raise ConfigError(f"{where}: secret_key must have at least 16 characters (or leave it out: one is generated)")
    out["secret_key"] = out["secret_key"] or _generated_secret(data_dir / "secret_key")
    return out


def load_config(path: str | Path | None = None, **overrides) -> ServerConfig:
    """Read the TOML file (`path`, else `$SERVER_CONFIG`; none: only the environment and `overrides`)."""
    doc, base, where = _read_toml(path or os.environ.get("SERVER_CONFIG"))
    doc.update(overrides)
    jobs = build_dataclass(JobsConfig, doc.pop("jobs", {}), f"{where}: [jobs]")
    if jobs.ray_auth_token_file and not Path(jobs.ray_auth_token_file).is_absolute():
        jobs.ray_auth_token_file = str(base / jobs.ray_auth_token_file)
    notify = _notify(doc.pop("notify", {}), where, base)
    for key in SECRET_KEYS - set(SECRETS):  # the secrets' `_file` and `_env` keys: strings, read below
        if not isinstance(doc.get(key, ""), str):
            raise ConfigError(f"{where}: {key}: expected str, got {doc[key]!r}")
    secret_refs = {k: doc.pop(k) for k in SECRET_KEYS - set(SECRETS) if k in doc}
    cfg = build_dataclass(ServerConfig, doc, f"{where}:", jobs=jobs, notify=notify)  # every key checked
    data_dir = _data_dir(doc, base, where)
    dirs = [(p if p.is_absolute() else base / p).resolve() for p in map(Path, cfg.training_data_dirs)]
    return dataclasses.replace(cfg, data_dir=data_dir, training_data_dirs=dirs,
                               **_secrets(doc | secret_refs, base, data_dir, where))


def _notify(table, where: str, base: Path) -> NotifyConfig:
    """The [notify] table; `urls_file` adds its lines (comments with #)."""
    cfg = build_dataclass(NotifyConfig, table, f"{where}: [notify]")
    if cfg.urls_file:
        path = Path(cfg.urls_file) if Path(cfg.urls_file).is_absolute() else base / cfg.urls_file
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"{where}: [notify].urls_file: cannot read {path}: {exc.strerror}") from None
        cfg.urls = [*cfg.urls, *(x.strip() for x in lines if x.strip() and not x.strip().startswith("#"))]
    return cfg


def _generated_secret(path: Path) -> str:
    """The session signing key: generated once (mode 0600) under a lock, so that gunicorn workers starting
    together on an empty data dir all read the same key; reused afterwards."""
    with locked(path.with_name(path.name + ".lock")):
        value = private_file(path).read_text().strip() if path.exists() else ""
        if not value:
            value = secrets.token_hex(32)
            write_private(path, (value + "\n").encode())
    return value
