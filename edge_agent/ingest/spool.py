"""A durable on-disk FIFO of points between MQTT and the database, used while the database is away or behind.

Segments `NNNNNNNNNNNN.seg` hold records `[u32 length][u32 crc32][line protocol, one point per line]`, appended
and fdatasynced before the MQTT messages they came from are acknowledged. The `cursor` file records how far the
drainer has written to the database; fully drained segments are deleted. The cursor is two fixed slots
`[u64 sequence][u64 segment][u64 offset][u32 crc32]`, written alternately in place and synced: moving it never
needs a new disk block, so a full disk cannot stop the drainer from freeing space (a torn slot fails its crc and
the other one is used). It is written at most every `cursor_interval_s` while a backlog drains and at once when
the spool runs empty; after a crash the drainer resumes at the cursor, so points after it may be written twice —
InfluxDB overwrites a point with the same series and time, so they are stored once.

Recovery at start (every record is checked: length ≥ 1, crc32, the body ends with a newline):
- a bad tail (a crash mid-append: never acknowledged) is cut away;
- a bad record **followed by good ones** (a card that lost or garbled an acknowledged write) is moved to
  `quarantine/<segment>-<offset>.bad`, counted (`damaged_records`, `quarantined_bytes`) and logged as an error;
  the records after it are kept (the segment is rewritten without the damaged bytes, the cursor moved with it).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from edge_agent.runtime.durable import datasync, fsync_dir, make_dirs, replace_file
from shared.points import Point, to_lines

log = logging.getLogger(__name__)
HEADER = struct.Struct("<II")
CURSOR_SLOT = struct.Struct("<QQQI")
DRAINED_ROTATE_BYTES = 64 << 10


class SpoolFull(Exception):
    """Appending would exceed the configured bound; the caller must hold (not acknowledge) its messages."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


def record_at(data: bytes | memoryview, pos: int) -> int | None:
    """The end of the valid record starting at `pos`, or None (length 0 or past the end, bad crc, or a body
    that does not end with a newline: every record appended holds whole lines)."""
    if pos + HEADER.size > len(data):
        return None
    length, crc = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if length == 0 or end > len(data) or data[end - 1] != 0x0A:
        return None
    return end if zlib.crc32(data[pos + HEADER.size:end]) == crc else None


def scan(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """Check a segment: (good spans, damaged spans followed by good records, where the torn tail starts).

    After a bad record the next good one is searched right after each newline (every record ends with one, so
    the record after a damaged one starts after a newline unless it is damaged too)."""
    good: list[tuple[int, int]] = []
    damaged: list[tuple[int, int]] = []
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        end = record_at(view, pos)
        if end is not None:
            good.append((pos, end))
            pos = end
            continue
        nxt = None
        nl = data.find(b"\n", pos)
        while nl >= 0:
            if record_at(view, nl + 1) is not None:
                nxt = nl + 1
                break
            nl = data.find(b"\n", nl + 1)
        if nxt is None:
            return good, damaged, pos
        damaged.append((pos, nxt))
        pos = nxt
    return good, damaged, len(data)


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 512 << 20, segment_bytes: int = 16 << 20,
                 cursor_interval_s: float = 0.0):
        self.dir = Path(directory)
        make_dirs(self.dir, 0o700)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.cursor_interval_s = cursor_interval_s
        self._lock = threading.Lock()
        self._data_ready = threading.Condition(self._lock)
        self._sizes: dict[int, int] = {}  # durable size of each segment
        self.damaged_records = 0  # found at start: bad records followed by good ones (quarantined)
        self.quarantined_bytes = 0
        found = self._read_cursor()
        self._cursor_seq = found[0] if found else 0
        mapped = self._recover(found[1:] if found else None)
        self._cursor = self._position(mapped)
        self._cursor_written = float("-inf")  # the first commit writes it
        self._cursor_dirty = False
        if found and mapped != found[1:]:
            self._write_cursor(self._cursor)  # the segment holding it was rewritten
        self._write_seg = max(self._sizes) if self._sizes else 1
        self._sizes.setdefault(self._write_seg, 0)
        path = self._seg_path(self._write_seg)
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if new:
            fsync_dir(self.dir)  # the name of the segment the first records go to must survive a power cut too
        self._pending_points = self._count_pending_points()
        self._torn = False

    # -- files ---------------------------------------------------------------------------------------------
    def _seg_path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}.seg"

    def _recover(self, cursor: tuple[int, int] | None) -> tuple[int, int] | None:
        """Find segments, cut torn tails, quarantine damaged records; returns the cursor moved along with any
        segment that had to be rewritten."""
        for path in sorted(self.dir.glob("*.seg")):
            seg = int(path.stem)
            data = path.read_bytes()
            good, damaged, tail = scan(data)
            if damaged:
                cursor = self._quarantine(path, seg, data, good, damaged, cursor)
                self._sizes[seg] = sum(b - a for a, b in good)
                continue
            if tail != len(data):
                log.warning("spool: cutting the torn tail of %s (%d of %d bytes valid: a write the power cut or "
                            "crash interrupted, never acknowledged)", path.name, tail, len(data))
                with open(path, "r+b") as f:
                    f.truncate(tail)
                    os.fsync(f.fileno())
            self._sizes[seg] = tail
        return cursor

    def _quarantine(self, path: Path, seg: int, data: bytes, good: list[tuple[int, int]],
                    damaged: list[tuple[int, int]], cursor: tuple[int, int] | None) -> tuple[int, int] | None:
        """Keep the damaged bytes aside, rewrite the segment with its good records only, move the cursor."""
        qdir = self.dir / "quarantine"
        make_dirs(qdir, 0o700)
        for a, b in damaged:
            replace_file(qdir / f"{seg:012d}-{a:010d}.bad", data[a:b])
            self.damaged_records += 1
            self.quarantined_bytes += b - a
            log.error("spool: %s holds %d damaged bytes at offset %d (the disk lost or garbled an acknowledged "
                      "write); moved to %s, the %d good records after them are kept", path.name, b - a, a,
                      qdir / f"{seg:012d}-{a:010d}.bad", sum(1 for g in good if g[0] >= b))
        replace_file(path, b"".join(data[a:b] for a, b in good))
        if cursor is not None and cursor[0] == seg:
            moved = 0
            for a, b in good:  # the first good record at or after the cursor keeps its place in the new file
                if b <= cursor[1]:
                    moved += b - a
            cursor = (seg, moved)
        return cursor

    def _read_cursor(self) -> tuple[int, int, int] | None:
        """(sequence, segment, offset) of the newest valid cursor slot, or None."""
        try:
            data = (self.dir / "cursor").read_bytes()
        except OSError:
            return None
        if data[:1].isdigit():  # the first release's text format: "SEGMENT OFFSET"
            try:
                seg, off = (int(x) for x in data.split())
                return 0, seg, off
            except ValueError:
                return None
        best = None
        for k in range(2):
            chunk = data[k * CURSOR_SLOT.size:(k + 1) * CURSOR_SLOT.size]
            if len(chunk) < CURSOR_SLOT.size:
                continue
            seq, seg, off, crc = CURSOR_SLOT.unpack(chunk)
            if zlib.crc32(chunk[:-4]) == crc and (best is None or seq > best[0]):
                best = (seq, seg, off)
        return best

    def _position(self, found: tuple[int, int] | None) -> Position:
        first = min(self._sizes) if self._sizes else 1
        if found is None:
            return Position(first, 0)
        seg, off = found
        if seg not in self._sizes:  # drained segment already deleted
            return Position(first, 0) if seg < first else Position(seg, 0)
        return Position(seg, min(off, self._sizes[seg]))

    def _write_cursor(self, pos: Position) -> None:
        path = self.dir / "cursor"
        if not path.exists() or path.stat().st_size != 2 * CURSOR_SLOT.size:
            replace_file(path, bytes(2 * CURSOR_SLOT.size))  # created (or converted) once, at full size
        self._cursor_seq += 1
        packed = CURSOR_SLOT.pack(self._cursor_seq, pos.segment, pos.offset, 0)[:-4]
        slot = packed + struct.pack("<I", zlib.crc32(packed))
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, slot, (self._cursor_seq % 2) * CURSOR_SLOT.size)
            datasync(fd)
        finally:
            os.close(fd)

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
        """Durably append one record (write + fdatasync). Raises SpoolFull when over the bound."""
        if points:
            self.append_lines(to_lines(points), len(points))

    def append_lines(self, body: bytes, n_points: int) -> None:
        """Durably append line protocol (each line ending in a newline) as one record.

        Raises SpoolFull when over the bound, OSError when the disk refuses (full, I/O error): then the segment
        is cut back to its last durable record, so nothing half-written is ever read back."""
        if not body:
            return
        record = HEADER.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._pending_bytes_locked() + len(record) > self.max_bytes:
                raise SpoolFull(f"spool holds {self._pending_bytes_locked()} bytes, bound {self.max_bytes}")
            if self._torn:  # an earlier failed append could not be cut back: do it before writing after it
                os.ftruncate(self._fd, self._sizes[self._write_seg])
                self._torn = False
            if self._sizes[self._write_seg] >= self.segment_bytes:
                self._rotate()
            try:
                written = os.write(self._fd, record)
                if written != len(record):
                    raise OSError(28, f"short write ({written} of {len(record)} bytes)")
                datasync(self._fd)
            except OSError:
                try:
                    os.ftruncate(self._fd, self._sizes[self._write_seg])
                except OSError:
                    self._torn = True
                raise
            self._sizes[self._write_seg] += len(record)
            self._pending_points += n_points
            self._data_ready.notify_all()

    def _rotate(self) -> None:
        fd = os.open(self._seg_path(self._write_seg + 1), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(self._fd)
        self._fd = fd
        self._write_seg += 1
        self._sizes[self._write_seg] = 0
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

    def wait_for_batch(self, points: int, timeout: float, quiet: float) -> None:
        """Block until `points` are pending, `timeout` has passed, or nothing was appended for `quiet` seconds.

        The drainer's batch: full batches go at once, a trickle is gathered for up to `timeout`, and the end of a
        burst goes out after `quiet` instead of waiting out the whole `timeout` (waiting longer would only
        delay what is already there)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending_points < points:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                before = self._pending_points
                self._data_ready.wait(min(quiet, left))
                if self._pending_points == before:
                    return

    def peek(self, max_points: int) -> tuple[list[bytes], Position]:
        """Records (line-protocol bytes, each line ending in a newline) from the cursor on — at least one
        record, about `max_points` points — and where they end."""
        with self._lock:
            return self._read_records(self._cursor, max_points)

    def commit(self, pos: Position, points: int) -> None:
        """Everything before `pos` is in the database: delete fully drained segments (first, so that a full disk
        gets space back), then move the cursor durably. A crash in between resumes at the first remaining
        segment's start: points there may be written again, which InfluxDB stores once."""
        with self._lock:
            for seg in sorted(s for s in self._sizes if s < pos.segment):
                self._seg_path(seg).unlink(missing_ok=True)
                del self._sizes[seg]
            if pos.segment == self._write_seg and pos.offset == self._sizes[pos.segment] \
                    and pos.offset >= DRAINED_ROTATE_BYTES:
                # all drained: start a new segment so that the old one's space comes back now (a full disk
                # may be waiting for it), not when the segment would have been full
                self._rotate()
                self._seg_path(pos.segment).unlink(missing_ok=True)
                del self._sizes[pos.segment]
                pos = Position(self._write_seg, 0)
            self._cursor = pos
            self._pending_points = max(0, self._pending_points - points)
            drained = pos.segment == self._write_seg and pos.offset == self._sizes[pos.segment]
            if drained or time.monotonic() - self._cursor_written >= self.cursor_interval_s:
                self._persist_cursor()
            else:
                self._cursor_dirty = True

    def _persist_cursor(self) -> None:
        try:
            self._write_cursor(self._cursor)
            self._cursor_written = time.monotonic()
            self._cursor_dirty = False
        except OSError as exc:  # the next commit tries again; until then a crash means some rewrites
            self._cursor_dirty = True
            log.warning("spool: cannot persist the cursor (%s); after a crash some points would be written "
                        "to the database again (stored once)", exc)

    def close(self) -> None:
        with self._lock:
            if self._cursor_dirty:
                self._persist_cursor()
            os.close(self._fd)
