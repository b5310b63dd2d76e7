"""The storage interface and its configuration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.points import Point


class StorageError(Exception):
    """A write or query failed. `retryable` is False for errors that retrying cannot fix (bad data)."""

    def __init__(self, message: str, retryable: bool = True, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass
class StorageConfig:
    """Where points go. 1.x: url, database, username/password. 2.x: url, org, bucket, token."""

    version: int = 1
    url: str = "http://127.0.0.1:8086"
    database: str = "energy"
    username: str | None = None
    password: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    timeout_s: float = 10.0  # per socket operation (connect, each send and receive)
    deadline_s: float = 60.0  # per request, whole: a database that trickles its answer cannot hold a thread
    create_database: bool = True
    retention_policy: str | None = None  # raw readings (None: the database's default policy)
    # 1.x: the retention policy of what lasts (shared.schema.KEPT_MEASUREMENTS); 2.x: its bucket. None: everything
    # in one place (retention off). Set from the agent's [retention] section, or the server's node settings.
    keep_policy: str | None = None

    def __repr__(self) -> str:  # never show secrets in logs
        return (f"StorageConfig(version={self.version}, url={self.url!r}, database={self.database!r}, "
                f"bucket={self.bucket!r}, org={self.org!r}, username={self.username!r}, "
                f"password={'***' if self.password else None}, token={'***' if self.token else None})")


class Storage(Protocol):
    """What every component needs from the database."""

    def write(self, points: Sequence[Point]) -> None: ...

    def write_lines(self, body: bytes) -> None: ...

    def query_series(self, measurement: str, field: str, start: datetime, end: datetime,
                     tags: dict[str, str] | None = None) -> list[tuple[int, float]]: ...

    def query(self, text: str) -> list[dict]: ...

    def source(self, measurement: str) -> str:
        """The InfluxQL FROM clause of a measurement: `"db"."keep"."energy_flow"` for what lasts when a keep
        policy is set, else the quoted name (the default policy). Callers of `query` use it."""
        ...

    def delete_points(self, measurement: str, times_ns: list[int]) -> None:
        """Delete every point of `measurement` at these times (a rewrite that must drop fields)."""
        ...

    def readings_near(self, measurement: str, field: str, tags: dict[str, str] | None, boundaries_ns: list[int],
                      window_ns: int) -> list[tuple[int, float]]:
        """For each boundary B: the last reading in (B − window, B] and the first in (B, B + window] — all a
        counter's value at B depends on — instead of every raw reading in between."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...
