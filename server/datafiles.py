"""Which files a training job may read: only CSVs in the server's own areas (pulled history in data_dir/cache,
operator uploads in data_dir/uploads, and the directories named by `training_data_dirs`), never an arbitrary path
such as data_dir/secret_key or /proc/self/environ. Symlinks are followed before the check."""

from __future__ import annotations

import os
from pathlib import Path

from server.config import ServerConfig


class DataFileError(ValueError):
    pass


def roots(config: ServerConfig) -> list[Path]:
    return [p.resolve() for p in (config.cache_dir, config.uploads_dir, *config.training_data_dirs)]


def resolve(config: ServerConfig, given: str) -> Path:
    """The real path of a training data file (relative paths are in data_dir/uploads), or DataFileError.

    The message names the path as given and never anything of the file's content."""
    allowed = roots(config)
    where = ", ".join(str(r) for r in allowed)
    path = Path(given)
    path = path if path.is_absolute() else config.uploads_dir / path
    if not any(Path(os.path.normpath(path)).is_relative_to(r) for r in allowed):
        raise DataFileError(f"{given} is outside the training data directories ({where})")
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DataFileError(f"{given} does not exist") from None
    if not any(real.is_relative_to(r) for r in allowed):  # a symlink pointing out
        raise DataFileError(f"{given} is outside the training data directories ({where})")
    if not real.is_file():
        raise DataFileError(f"{given} is not a file")
    return real


def checked_pull(config: ServerConfig, pulled: dict) -> dict:
    """A pull's record (Database.last_pull) with its files checked as a training's: the energy file resolved (or
    DataFileError), the outdoor temperature file resolved, or dropped with the reason, so that nothing reads it:
    neither the training nor either push gate (a job's, a manual push's)."""
    checked = pulled | {"file": str(resolve(config, pulled["file"]))}
    temp = dict(pulled.get("temperature") or {})
    if temp.get("file"):
        try:
            temp["file"] = str(resolve(config, temp["file"]))
        except DataFileError as exc:
            temp = {k: v for k, v in temp.items() if k != "file"} | {"error": str(exc)}
        checked["temperature"] = temp
    return checked
