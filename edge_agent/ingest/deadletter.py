"""Dead-letter file: every rejected message as one JSON line (topic, payload, reason, time, rule), fsynced.

Framing across power cuts: entries are appended and fsynced before their messages are acknowledged, so a write
the cut interrupted belongs to messages the broker delivers again. At open, a tail after the last newline (a torn
write: part of an entry, or zeros where the data never reached the disk) is cut away and counted (`torn_bytes`),
so the next entry starts on a line of its own instead of being swallowed by the fragment. `read_entries` reads
the file back line by line and, should a line still hold garbage before an entry (a disk that lost an fsynced
write), finds the entry at the end of it.

The file rotates at `max_bytes` into `NAME.1` … `NAME.<keep>`; the oldest file falls off the end. Nothing goes
silently: the entries rotation deletes are counted (health counter `deadletter_rotated_away`, a warning in the
log, and a running total in `NAME.deleted` that survives restarts). Files are private (0600): payloads may hold
what a device should not have sent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.runtime.durable import fsync_dir, make_dirs, replace_file

log = logging.getLogger(__name__)


def _open_private(path: Path):
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if new:
        fsync_dir(path.parent)  # the file's name must survive a power cut like the entries fsynced into it
    return os.fdopen(fd, "ab")


def _utf8(payload: bytes, truncated: bool) -> str | None:
    """The payload as text, or None if it is not UTF-8 (an excerpt may end inside a character)."""
    for cut in range(4 if truncated else 1):
        try:
            return payload[:len(payload) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def cut_torn_tail(path: Path) -> int:
    """Cut what follows the last newline (a write a crash interrupted); returns the bytes cut."""
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            step = min(4096, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            i = chunk.rfind(b"\n")
            if i >= 0:
                pos = pos - step + i + 1
                break
            pos -= step
        if pos != size:
            f.truncate(pos)
            os.fsync(f.fileno())
        return size - pos


def parse_line(line: bytes) -> dict | None:
    """One dead-letter line as its entry; None if no entry can be read from it. Garbage before an entry (a lost
    write the next one was appended to) is skipped by trying each `{` from the right."""
    text = line.decode("utf-8", errors="replace").strip()
    start = len(text)
    while True:
        try:
            doc = json.loads(text[start:]) if start < len(text) else None
            if isinstance(doc, dict):
                return doc
        except ValueError:
            pass
        start = text.rfind("{", 0, start)
        if start < 0:
            return None


def read_entries(path: Path) -> tuple[list[dict], int]:
    """(entries, lines that hold none) of one dead-letter file; an unterminated last line counts as unread."""
    entries, bad = [], 0
    with open(path, "rb") as f:
        for line in f:
            doc = parse_line(line) if line.endswith(b"\n") else None
            if doc is None:
                bad += 1
            else:
                entries.append(doc)
    return entries, bad


class DeadLetter:
    def __init__(self, path: Path, max_bytes: int = 64 << 20, keep: int = 5,
                 on_deleted: Callable[[int], None] | None = None):
        self.path = Path(path)
        make_dirs(self.path.parent)
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self.on_deleted = on_deleted
        self._lock = threading.Lock()
        self.torn_bytes = cut_torn_tail(self.path)
        if self.torn_bytes:
            log.warning("dead-letter file %s ended in %d bytes of an entry a crash interrupted (its message was "
                        "never acknowledged and comes again): cut away", self.path, self.torn_bytes)
        self._file = _open_private(self.path)

    @staticmethod
    def entry(topic: str, payload: bytes, reason: str, detail: str, rule: str | None,
              payload_bytes: int | None = None) -> dict:
        """One dead-letter line. `payload_bytes`: the real size when `payload` is only an excerpt (an oversized
        message keeps its first bytes: an entry never grows with what a client sends)."""
        doc = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "topic": topic, "reason": reason, "detail": detail, "rule": rule}
        truncated = payload_bytes is not None and payload_bytes > len(payload)
        text = _utf8(payload, truncated)
        if text is None:
            doc["payload"] = base64.b64encode(payload).decode("ascii")
            doc["payload_encoding"] = "base64"
        else:
            doc["payload"] = text
        if truncated:
            doc["payload_bytes"] = payload_bytes
            doc["payload_truncated"] = True
        return doc

    @property
    def deleted_file(self) -> Path:
        return self.path.with_name(self.path.name + ".deleted")

    def deleted_total(self) -> int:
        """Entries deleted by rotation since the file was first created."""
        try:
            return int(self.deleted_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def _rotated(self, k: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{k}")

    def _rotate(self) -> None:
        self._file.close()
        oldest = self._rotated(self.keep)
        if oldest.exists():
            with open(oldest, "rb") as f:
                lost = sum(1 for _ in f)
            oldest.unlink()
            total = self.deleted_total() + lost
            replace_file(self.deleted_file, f"{total}\n".encode())
            log.warning("dead-letter rotation deleted %d entries (%s; %d in all); raise ingest.deadletter_keep "
                        "or ingest.deadletter_max_bytes to keep more", lost, oldest.name, total)
            if self.on_deleted:
                self.on_deleted(lost)
        for k in range(self.keep - 1, 0, -1):
            if self._rotated(k).exists():
                os.replace(self._rotated(k), self._rotated(k + 1))
        os.replace(self.path, self._rotated(1))
        fsync_dir(self.path.parent)
        self._file = _open_private(self.path)

    def write(self, entries: list[dict], sync: bool = True) -> None:
        """Append entries; with `sync` they are on disk when this returns (before their messages are acked)."""
        if not entries:
            return
        data = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in entries)
        with self._lock:
            if self._file.tell() + len(data) > self.max_bytes and self._file.tell() > 0:
                self._rotate()
            try:
                self._file.write(data)
                self._file.flush()
                if sync:
                    os.fsync(self._file.fileno())
            except OSError:
                # e.g. a full disk: drop the partial write so the file stays one JSON document per line
                self._truncate_to_last_newline()
                raise

    def _truncate_to_last_newline(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        cut_torn_tail(self.path)
        self._file = _open_private(self.path)

    def close(self) -> None:
        with self._lock:
            self._file.close()
