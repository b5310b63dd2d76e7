"""Crash-safe file helpers: fsync a file's data and a directory's entries, replace a file atomically, create
directories durably.

A file's fsync makes its bytes durable, not its name: a new, renamed or removed directory entry is durable only
once its directory is fsynced (POSIX; ext4's journal happens to commit names with any fsync, other filesystems
and the power-cut test's filesystem, tools/powercut_fs.py, do not).
"""

from __future__ import annotations

import os
from pathlib import Path

# fdatasync skips the inode's times (a metadata write on every append) where the platform has it
datasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write and fsync (the caller renames it into place and fsyncs the directory). The file gets exactly `mode`,
    whatever the umask: a state file another user reads (0o644) must stay readable under UMask=0077."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably: a temporary file written and fsynced, renamed over the
    old one, the directory fsynced. A power cut at any moment leaves the old or the new content, never an empty,
    partial or missing file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write_file(tmp, data, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def make_dirs(path: Path, mode: int = 0o777) -> None:
    """`mkdir -p` whose new directories survive a power cut: each one created is fsynced into its parent."""
    path = Path(path)
    if path.is_dir():
        return
    make_dirs(path.parent, mode)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return
    fsync_dir(path.parent)
