"""Server configuration: a TOML file plus environment overrides; secrets from files or the environment."""

from __future__ import annotations

import os
import secrets
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    pass


def _secret(doc: dict, key: str, base: Path) -> str | None:
    env_name = doc.get(f"{key}_env") or f"SERVER_{key.upper()}"
    if os.environ.get(env_name):
        return os.environ[env_name]
    if doc.get(f"{key}_file"):
        path = Path(doc[f"{key}_file"])
        path = path if path.is_absolute() else base / path
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {path}: {exc.strerror}") from None
    return doc.get(key)


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
    login_window_s: float = 300.0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "server.sqlite"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "keys" / "signing.key"


def load_config(path: str | Path | None = None, **overrides) -> ServerConfig:
    """Read the TOML file (or only the environment/overrides when path is None)."""
    doc: dict = {}
    base = Path.cwd()
    path = path or os.environ.get("SERVER_CONFIG")
    if path:
        path = Path(path)
        base = path.parent
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"server config {path}: {exc}") from None
    doc.update(overrides)
    data_dir = Path(os.environ.get("SERVER_DATA_DIR") or doc.get("data_dir") or "var/server")
    data_dir = data_dir if data_dir.is_absolute() else (base / data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = ServerConfig(data_dir=data_dir.resolve())
    cfg.admin_user = doc.get("admin_user", cfg.admin_user)
    cfg.admin_password_hash = _secret(doc, "admin_password_hash", base)
    cfg.api_token = _secret(doc, "api_token", base)
    for key in ("session_cookie_secure", "python", "training_epochs", "status_poll_s", "login_attempts",
                "login_window_s"):
        if key in doc:
            setattr(cfg, key, doc[key])
    if not cfg.admin_password_hash:
        raise ConfigError("admin_password_hash is required (python -m server hash-password; put the hash in the "
                          "config, a file named by admin_password_hash_file, or SERVER_ADMIN_PASSWORD_HASH)")
    if cfg.api_token is not None and len(cfg.api_token) < 16:
        raise ConfigError("api_token must have at least 16 characters")
    cfg.secret_key = _secret(doc, "secret_key", base) or _generated_secret(data_dir / "secret_key")
    return cfg


def _generated_secret(path: Path) -> str:
    """The session signing key: generated on first start (mode 0600), reused afterwards."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
