"""Server configuration: a TOML file plus environment overrides; secrets by the shared rule (shared/secrets.py).

Every key is checked: an unknown key (a typo) or a value of the wrong type is a ConfigError naming the key, so a
setting is never silently ignored.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from server.files import locked, private_dir, private_file, write_private
from shared.secrets import read_secret


class ConfigError(ValueError):
    pass


SECRETS = ("admin_password_hash", "api_token", "secret_key")


def _positive(v) -> bool:
    return v > 0


# key → (type name, extra check or None, what the check wants)
KEYS: dict[str, tuple[str, Callable | None, str]] = {
    "data_dir": ("str", bool, "a directory"),
    "admin_user": ("str", lambda v: bool(v.strip()), "a non-empty name"),
    "session_cookie_secure": ("bool", None, ""),
    "python": ("str", bool, "a Python executable"),
    "training_epochs": ("int", _positive, "≥ 1"),
    "status_poll_s": ("float", _positive, "> 0"),
    "login_attempts": ("int", _positive, "≥ 1"),
    "login_account_attempts": ("int", lambda v: v >= 0, "≥ 0 (0: off)"),
    "login_window_s": ("float", _positive, "> 0"),
    "trusted_proxies": ("int", lambda v: 0 <= v <= 5, "between 0 and 5"),
    "training_data_dirs": ("list[str]", lambda v: all(v), "a list of directories"),
    "keep_runs": ("int", lambda v: v >= 0, "≥ 0 (0: keep every run)"),
    "keep_pulls": ("int", lambda v: v >= 0, "≥ 0 (0: keep every pull)"),
} | {f"{k}{suffix}": ("str", None, "") for k in SECRETS for suffix in ("", "_file", "_env")}
# keys copied as they are (data_dir, training_data_dirs and the secrets are resolved first)
PLAIN = frozenset(KEYS) - {"data_dir", "training_data_dirs"} - {k for k in KEYS if k.startswith(SECRETS)}

# The [jobs] table: where trainings run (Ray) and how many jobs run at once.
JOBS_KEYS: dict[str, tuple[str, Callable | None, str]] = {
    "ray_address": ("str", None, ""),
    "ray_auth_token_file": ("str", None, ""),
    "ray_temp_dir": ("str", None, ""),
    "embedded_cpus": ("int", lambda v: v >= 0, "≥ 0 (0: every core)"),
    "cpus_per_job": ("float", _positive, "> 0"),
    "memory_mb_per_job": ("int", lambda v: v >= 0, "≥ 0 (0: no reservation)"),
    "max_concurrent": ("int", lambda v: v >= 0, "≥ 0 (0: what the cluster holds)"),
    "pull_concurrency": ("int", _positive, "≥ 1"),
    "poll_concurrency": ("int", _positive, "≥ 1"),
    "skill_poll_s": ("float", lambda v: v >= 0, "≥ 0 (0: off)"),
}


@dataclass
class JobsConfig:
    """[jobs]: trainings run as Ray tasks — on a Ray started inside the job worker at its first training
    (`ray_address` empty), or on the cluster at `ray_address` (host:port of `ray start --head`)."""

    ray_address: str = ""
    ray_auth_token_file: str = ""  # the cluster's token (Ray's token auth); embedded: generated in data_dir
    ray_temp_dir: str = ""  # embedded Ray's session files (default: Ray's, /tmp/ray)
    embedded_cpus: int = 0
    cpus_per_job: float = 1.0
    memory_mb_per_job: int = 0
    max_concurrent: int = 0
    pull_concurrency: int = 4
    poll_concurrency: int = 8
    skill_poll_s: float = 3600.0


# The [notify] table: who is told when a house stops reporting or forecasting (server/notify.py).
NOTIFY_KEYS: dict[str, tuple[str, Callable | None, str]] = {
    "urls": ("list[str]", lambda v: all(v), "a list of apprise URLs (ntfy://…, mailtos://…, json://…)"),
    "urls_file": ("str", bool, "a file with one apprise URL per line"),
    "stale_after_s": ("float", _positive, "> 0"),
    "forecast_after_s": ("float", _positive, "> 0"),
    "backup_after_s": ("float", _positive, "> 0"),
    "agent_problems": ("bool", None, ""),
    "resolved": ("bool", None, ""),
}


@dataclass
class NotifyConfig:
    """[notify]: apprise URLs (they hold tokens: put them in `urls_file`, 0600) and when a house is reported."""

    urls: list[str] = field(default_factory=list)
    urls_file: str = ""
    stale_after_s: float = 1800.0  # the agent has not answered for this long: "stopped reporting"
    forecast_after_s: float = 7200.0  # its newest forecast is this old: "stopped forecasting"
    backup_after_s: float = 2 * 86400.0  # its last good backup is this old
    agent_problems: bool = True  # also the problems the agent reports itself (its `problem` sensor)
    resolved: bool = True  # say so when a problem is over


@dataclass
class ServerConfig:
    data_dir: Path
    admin_user: str = "admin"
    admin_password_hash: str | None = None
    api_token: str | None = None
    secret_key: str = ""
    session_cookie_secure: bool = True
    python: str = sys.executable
    training_epochs: int = 40
    status_poll_s: float = 60.0
    login_attempts: int = 5
    login_account_attempts: int = 20
    login_window_s: float = 300.0
    trusted_proxies: int = 0
    training_data_dirs: list[Path] = field(default_factory=list)
    # retention (server/retention.py): per house or group the newest training runs kept besides those a node has
    # active or as previous; per house the newest history pulls kept
    keep_runs: int = 10
    keep_pulls: int = 3
    jobs: JobsConfig = field(default_factory=JobsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    @property
    def backups_dir(self) -> Path:
        """Agent backups pulled by the server (server/backup.py)."""
        return self.data_dir / "backups"

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


def _checked(key: str, value, where: str, keys: dict = KEYS, prefix: str = ""):
    """The value converted to its key's type, or a ConfigError naming the key."""
    if key not in keys:
        raise ConfigError(f"{where}: unknown key {prefix}{key!r}; known: {', '.join(sorted(keys))}")
    kind, check, wants = keys[key]
    key = prefix + key
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, int | float) and not isinstance(value, bool),
          "bool": isinstance(value, bool),
          "str": isinstance(value, str),
          "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
    if not ok:
        raise ConfigError(f"{where}: {key} must be {kind.replace('str', 'a string')}, got {value!r}")
    value = float(value) if kind == "float" else value
    if check is not None and not check(value):
        raise ConfigError(f"{where}: {key} must be {wants}, got {value!r}")
    return value


def _secret(doc: dict, key: str, base: Path) -> str | None:
    """The shared rule (shared/secrets.py): `<key>_file`, else the variable named by `<key>_env` (default
    `SERVER_<KEY>`), else `<key>`. A relative `<key>_file` is relative to the config file's directory."""
    file = Path(doc[f"{key}_file"]) if doc.get(f"{key}_file") else None
    file = base / file if file is not None and not file.is_absolute() else file
    try:
        return read_secret(doc.get(key), str(file) if file else None, doc.get(f"{key}_env") or f"SERVER_{key.upper()}")
    except OSError as exc:
        raise ConfigError(f"{key}_file: cannot read {file}: {exc.strerror}") from None


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


def _data_dir(doc: dict, base: Path) -> Path:
    """`$SERVER_DATA_DIR`, else `data_dir`, else var/server; created 0700."""
    data_dir = Path(os.environ.get("SERVER_DATA_DIR") or doc.get("data_dir") or "var/server")
    data_dir = data_dir if data_dir.is_absolute() else (base / data_dir)
    try:
        private_dir(data_dir)
    except OSError as exc:
        raise ConfigError(f"data_dir: cannot create {data_dir}: {exc.strerror}") from None
    return data_dir.resolve()


def _secrets(doc: dict, base: Path, data_dir: Path) -> dict:
    """The three secrets, checked; the session key is generated in data_dir when none is given."""
    out = {key: _secret(doc, key, base) for key in SECRETS}
    if not out["admin_password_hash"]:
        raise ConfigError("admin_password_hash is required (python -m server hash-password; put the hash in the "
                          "config, a file named by admin_password_hash_file, or SERVER_ADMIN_PASSWORD_HASH)")
    if out["api_token"] is not None and len(out["api_token"]) < 16:
        raise ConfigError("api_token must have at least 16 characters")
    if out["secret_key"] is not None and len(out["secret_key"]) < 16:
        raise ConfigError("secret_key must have at least 16 characters (or leave it out: one is generated)")
    out["secret_key"] = out["secret_key"] or _generated_secret(data_dir / "secret_key")
    return out


def load_config(path: str | Path | None = None, **overrides) -> ServerConfig:
    """Read the TOML file (`path`, else `$SERVER_CONFIG`; none: only the environment and `overrides`)."""
    doc, base, where = _read_toml(path or os.environ.get("SERVER_CONFIG"))
    doc.update(overrides)
    jobs = _jobs(doc.pop("jobs", {}), where)
    notify = _notify(doc.pop("notify", {}), where, base)
    doc = {k: _checked(k, v, where) for k, v in doc.items()}
    data_dir = _data_dir(doc, base)
    plain = {k: v for k, v in doc.items() if k in PLAIN}
    dirs = [(p if p.is_absolute() else base / p).resolve() for p in map(Path, doc.get("training_data_dirs", []))]
    if jobs.ray_auth_token_file and not Path(jobs.ray_auth_token_file).is_absolute():
        jobs.ray_auth_token_file = str(base / jobs.ray_auth_token_file)
    return ServerConfig(data_dir=data_dir, training_data_dirs=dirs, jobs=jobs, notify=notify, **plain,
                        **_secrets(doc, base, data_dir))


def _jobs(table, where: str) -> JobsConfig:
    """The [jobs] table, each key checked like the top level's (errors name `jobs.<key>`)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: jobs must be a table ([jobs]), got {table!r}")
    cfg = JobsConfig(**{k: _checked(k, v, where, JOBS_KEYS, "jobs.") for k, v in table.items()})
    if cfg.ray_address and not re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}", cfg.ray_address):
        raise ConfigError(f"{where}: jobs.ray_address must be host:port (of `ray start --head`), got "
                          f"{cfg.ray_address!r}")
    return cfg


def _notify(table, where: str, base: Path) -> NotifyConfig:
    """The [notify] table (errors name `notify.<key>`); `urls_file` adds its lines (comments with #)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: notify must be a table ([notify]), got {table!r}")
    cfg = NotifyConfig(**{k: _checked(k, v, where, NOTIFY_KEYS, "notify.") for k, v in table.items()})
    if cfg.urls_file:
        path = Path(cfg.urls_file) if Path(cfg.urls_file).is_absolute() else base / cfg.urls_file
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"notify.urls_file: cannot read {path}: {exc.strerror}") from None
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
