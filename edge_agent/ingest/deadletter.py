"""Dead-letter file: every rejected message as one JSON line (topic, payload, reason, time, rule), fsynced.

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

log = logging.getLogger(__name__)

EXCERPT_BYTES = 1024  # what an entry keeps of an oversized payload (with its real size)


def _open_private(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "ab")


def _utf8(payload: bytes, truncated: bool) -> str | None:
    """The payload as text, or None if it is not UTF-8 (an excerpt may end inside a character)."""
    for cut in range(4 if truncated else 1):
        try:
            return payload[:len(payload) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


class DeadLetter:
    def __init__(self, path: Path, max_bytes: int = 64 << 20, keep: int = 5,
                 on_deleted: Callable[[int], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self.on_deleted = on_deleted
        self._lock = threading.Lock()
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
            tmp = self.deleted_file.with_suffix(".tmp")
            tmp.write_text(f"{total}\n")
            os.replace(tmp, self.deleted_file)
            log.warning("dead-letter rotation deleted %d entries (%s; %d in all); raise ingest.deadletter_keep "
                        "or ingest.deadletter_max_bytes to keep more", lost, oldest.name, total)
            if self.on_deleted:
                self.on_deleted(lost)
        for k in range(self.keep - 1, 0, -1):
            if self._rotated(k).exists():
                os.replace(self._rotated(k), self._rotated(k + 1))
        os.replace(self.path, self._rotated(1))
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
        with open(self.path, "r+b") as f:
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
            f.truncate(pos)
        self._file = _open_private(self.path)

    def close(self) -> None:
        with self._lock:
            self._file.close()
