"""Writing spooled line protocol to the database so that no byte string can stop the drainer: lines that could
run into the next one are held back, and a batch the database refuses is split until each refused line stands
alone (fuzzed against a real influxd: tests/edge_agent/ingest/test_fuzz_drainer.py)."""

from __future__ import annotations

import re
from collections.abc import Callable

from shared.points import contained_lines, split_lines
from shared.storage import Storage, StorageError


def write_isolating(storage: Storage, lines: list[bytes], rejected: Callable[[bytes, str], None]) -> None:
    """Write lines; on a permanent error split the batch in halves until each refused line stands alone, and
    hand those to `rejected(line, error)`. Raises only retryable StorageErrors (the database is away)."""
    try:
        storage.write_lines(b"".join(lines))
        return
    except StorageError as exc:
        if exc.retryable:
            raise
        if len(lines) == 1:
            rejected(lines[0], str(exc))
            return
    mid = len(lines) // 2
    write_isolating(storage, lines[:mid], rejected)
    write_isolating(storage, lines[mid:], rejected)


BEYOND_RETENTION = re.compile(r"^[^\n]*partial write: points beyond retention policy dropped=(\d+)$")
TOO_OLD = "older than the raw retention policy keeps (InfluxDB dropped it; [retention] raw_days)"


def _oldest(lines: list[bytes], n: int) -> list[bytes]:
    """The n lines with the oldest timestamps: what InfluxDB drops as beyond the retention policy."""
    def t(line: bytes) -> int:
        try:
            return int(line.rstrip(b"\n").rsplit(b" ", 1)[1])
        except (ValueError, IndexError):
            return 0
    return sorted(lines, key=t)[:n]


def write_body(storage: Storage, body: bytes) -> list[tuple[bytes, str]]:
    """Write a spooled body; returns the lines that were not stored, with the reason (to dead-letter).

    Lines that could run into the next one are held back (shared.points.contained_lines); lines the database
    refuses are isolated. Raises only retryable StorageErrors (the database is away)."""
    body, damaged = contained_lines(body)
    refused = [(line, "not a self-contained line-protocol line (it would run into the next line)")
               for line in damaged]
    try:
        storage.write_lines(body)
    except StorageError as exc:
        if exc.retryable:
            raise
        beyond = BEYOND_RETENTION.search(str(exc).split(": ", 1)[-1])
        if beyond:  # only readings older than the retention: InfluxDB wrote the rest, no need to split
            refused += [(line, TOO_OLD) for line in _oldest(split_lines(body), int(beyond.group(1)))]
            return refused
        write_isolating(storage, split_lines(body), lambda line, error: refused.append((line, error)))
    return refused
