"""Dead-letter file: every rejected message as one JSON line (topic, payload, reason, time, rule), fsynced."""

from __future__ import annotations

import base64
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path


class DeadLetter:
    def __init__(self, path: Path, max_bytes: int = 64 << 20):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file = open(self.path, "ab")  # noqa: SIM115 - long-lived handle

    @staticmethod
    def entry(topic: str, payload: bytes, reason: str, detail: str, rule: str | None) -> dict:
        doc = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "topic": topic, "reason": reason, "detail": detail, "rule": rule}
        try:
            doc["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            doc["payload"] = base64.b64encode(payload).decode("ascii")
            doc["payload_encoding"] = "base64"
        return doc

    def write(self, entries: list[dict], sync: bool = True) -> None:
        """Append entries; with `sync` they are on disk when this returns (before their messages are acked)."""
        if not entries:
            return
        data = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in entries)
        with self._lock:
            if self._file.tell() + len(data) > self.max_bytes and self._file.tell() > 0:
                self._file.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._file = open(self.path, "ab")  # noqa: SIM115
            self._file.write(data)
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()
