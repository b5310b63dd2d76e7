"""Logging to stderr and, when configured, to a size-rotated file."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path


def setup_logging(level: str = "INFO", file: Path | None = None, max_bytes: int = 10 << 20, backups: int = 5) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level.upper())
    for h in list(root.handlers):
        root.removeHandler(h)
    stream = logging.StreamHandler()
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # private: it names devices
        os.chmod(file, 0o600)
        rotating = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups)
        rotating.setFormatter(fmt)
        root.addHandler(rotating)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
