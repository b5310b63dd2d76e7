"""Private files for the server's data (node tokens, InfluxDB credentials, keys): directories 0700, files 0600,
and a cross-process lock for what several gunicorn workers may try to create at the same first start."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700, also when an older version left it 0755."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _chmod(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 if missing, else tighten it to 0600; the caller writes it afterwards."""
    path = Path(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    _chmod(path, 0o600)
    return path


def _chmod(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except PermissionError:  # not ours (e.g. a bind mount owned by root): say so, do not refuse to start
        log.warning("cannot make %s private (mode %o): not its owner", path, mode)


def open_private(path: Path, mode: str = "w", **kw):
    """open() for a new file created 0600 (text or binary per `mode`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, mode, **kw)


def write_private(path: Path, data: bytes) -> None:
    """Write `path` atomically: a unique 0600 temp file in the same directory, fsync, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock held on `path` (a 0600 lock file) across processes, e.g. gunicorn workers."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
