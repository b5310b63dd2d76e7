"""A durable on-disk FIFO of points between MQTT and the database.

Segments `NNNNNNNNNNNN.seg` hold records `[u32 length][u32 crc32][line protocol, one point per line]`, appended
and fsynced
before the MQTT messages they came from are acknowledged. A `cursor` file (atomically replaced) records how far
the drainer has written to the database; fully drained segments are deleted. On start, a torn last record
(crash mid-append, never acknowledged) is truncated away and draining resumes at the cursor, so points after
the cursor may be written twice — InfluxDB overwrites a point with the same series and time, so they are
stored once.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from edge_agent.durable import fsync_dir, write_file
from shared.points import Point, to_lines

log = logging.getLogger(__name__)
HEADER = struct.Struct("<II")


class SpoolFull(Exception):
    """Appending would exceed the configured bound; the caller must hold (not acknowledge) its messages."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 512 << 20, segment_bytes: int = 16 << 20):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._data_ready = threading.Condition(self._lock)
        self._sizes: dict[int, int] = {}  # durable size of each segment
        self._recover()
        self._cursor = self._load_cursor()
        self._write_seg = max(self._sizes) if self._sizes else 1
        self._sizes.setdefault(self._write_seg, 0)
        self._fd = os.open(self._seg_path(self._write_seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._pending_points = self._count_pending_points()

    # -- files ---------------------------------------------------------------------------------------------
    def _seg_path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}.seg"

    def _recover(self) -> None:
        """Find segments and cut a torn tail (a record whose length or crc does not check out)."""
        for path in sorted(self.dir.glob("*.seg")):
            seg = int(path.stem)
            data = path.read_bytes()
            good = 0
            while good + HEADER.size <= len(data):
                length, crc = HEADER.unpack_from(data, good)
                end = good + HEADER.size + length
                if end > len(data) or zlib.crc32(data[good + HEADER.size:end]) != crc:
                    break
                good = end
            if good != len(data):
                log.warning("spool: truncating torn tail of %s (%d of %d bytes valid)", path.name, good, len(data))
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            self._sizes[seg] = good

    def _load_cursor(self) -> Position:
        first = min(self._sizes) if self._sizes else 1
        try:
            seg, off = (int(x) for x in (self.dir / "cursor").read_text().split())
        except (OSError, ValueError):
            return Position(first, 0)
        if seg not in self._sizes:  # drained segment already deleted
            return Position(first, 0) if seg < first else Position(seg, 0)
        return Position(seg, min(off, self._sizes[seg]))

    def _count_pending_points(self) -> int:
        n, pos = 0, self._cursor
        while True:
            records, pos = self._read_records(pos, 1 << 62)
            if not records:
                return n
            n += sum(r.count(b"\n") for r in records)

    # -- writer --------------------------------------------------------------------------------------------
    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._pending_bytes_locked()

    def _pending_bytes_locked(self) -> int:
        return sum(size for seg, size in self._sizes.items() if seg >= self._cursor.segment) - self._cursor.offset

    @property
    def pending_points(self) -> int:
        return self._pending_points

    def append(self, points: list[Point]) -> None:
        """Durably append one record (write + fsync). Raises SpoolFull when over the bound."""
        if not points:
            return
        body = to_lines(points)
        record = HEADER.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._pending_bytes_locked() + len(record) > self.max_bytes:
                raise SpoolFull(f"spool holds {self._pending_bytes_locked()} bytes, bound {self.max_bytes}")
            if self._sizes[self._write_seg] >= self.segment_bytes:
                self._rotate()
            os.write(self._fd, record)
            os.fsync(self._fd)
            self._sizes[self._write_seg] += len(record)
            self._pending_points += len(points)
            self._data_ready.notify_all()

    def _rotate(self) -> None:
        os.close(self._fd)
        self._write_seg += 1
        self._sizes[self._write_seg] = 0
        self._fd = os.open(self._seg_path(self._write_seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_dir(self.dir)

    # -- reader --------------------------------------------------------------------------------------------
    def _read_records(self, pos: Position, max_points: int) -> tuple[list[bytes], Position]:
        records: list[bytes] = []
        n = 0
        while n < max_points:
            size = self._sizes.get(pos.segment)
            if size is None:
                break
            if pos.offset >= size:
                if pos.segment + 1 in self._sizes:
                    pos = Position(pos.segment + 1, 0)
                    continue
                break
            with open(self._seg_path(pos.segment), "rb") as f:
                f.seek(pos.offset)
                chunk = f.read(min(size - pos.offset, 8 << 20))
            off = 0
            while off + HEADER.size <= len(chunk) and n < max_points:
                length, _crc = HEADER.unpack_from(chunk, off)
                end = off + HEADER.size + length
                if end > len(chunk):
                    break
                record = chunk[off + HEADER.size:end]
                records.append(record)
                n += record.count(b"\n")
                off = end
            if off == 0:  # a record larger than the chunk: read it whole
                with open(self._seg_path(pos.segment), "rb") as f:
                    f.seek(pos.offset)
                    length, _crc = HEADER.unpack(f.read(HEADER.size))
                    records.append(f.read(length))
                    n += records[-1].count(b"\n")
                    off = HEADER.size + length
            pos = Position(pos.segment, pos.offset + off)
        return records, pos

    def wait_for_data(self, timeout: float) -> bool:
        """Block until something is pending (or timeout); True if there is."""
        with self._lock:
            if self._pending_points:
                return True
            self._data_ready.wait(timeout)
            return self._pending_points > 0

    def peek(self, max_points: int) -> tuple[list[bytes], Position]:
        """Records (line-protocol bytes, each line ending in a newline) from the cursor on — at least one
        record, about `max_points` points — and where they end."""
        with self._lock:
            return self._read_records(self._cursor, max_points)

    def commit(self, pos: Position, points: int) -> None:
        """Everything before `pos` is in the database: move the cursor durably, delete drained segments."""
        with self._lock:
            tmp = self.dir / "cursor.tmp"
            write_file(tmp, f"{pos.segment} {pos.offset}\n".encode())
            os.replace(tmp, self.dir / "cursor")
            self._cursor = pos
            self._pending_points = max(0, self._pending_points - points)
            for seg in [s for s in self._sizes if s < pos.segment]:
                self._seg_path(seg).unlink(missing_ok=True)
                del self._sizes[seg]

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
