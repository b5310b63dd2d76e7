"""The spool's own guarantees: records survive a restart, torn tails and torn cursor slots are recovered,
the first release's cursor file is read, a failed append leaves nothing half-written."""

from __future__ import annotations

import os
import threading
import time

from edge_agent.ingest.spool import CURSOR_SLOT, Spool
from shared.points import Point


def pts(*values: float) -> list[Point]:
    return [Point("m", {}, {"v": v}, i + 1) for i, v in enumerate(values)]


def test_cursor_survives_restart_and_a_torn_slot(tmp_path):
    s = Spool(tmp_path, segment_bytes=100)
    for v in range(6):
        s.append(pts(float(v)))
    _records, pos = s.peek(2)
    s.commit(pos, 2)
    records2, pos2 = s.peek(2)
    s.commit(pos2, 2)
    s.close()
    # tear the slot written last: the other (older) cursor is used, so nothing is lost, at most rewritten
    path = tmp_path / "cursor"
    data = bytearray(path.read_bytes())
    last = 2 % 2  # two commits: sequence 2 lives in slot 0
    data[last * CURSOR_SLOT.size + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    s = Spool(tmp_path, segment_bytes=100)
    again, _ = s.peek(2)
    assert again == records2  # resumes after the first commit
    assert s.pending_points == 4
    s.close()


def test_first_release_text_cursor_is_read(tmp_path):
    s = Spool(tmp_path)
    s.append(pts(1.0, 2.0))
    s.append(pts(3.0))
    first, pos = s.peek(1)
    s.close()
    (tmp_path / "cursor").write_text(f"{pos.segment} {pos.offset}\n")
    s = Spool(tmp_path)
    rest, _ = s.peek(10)
    assert rest and rest[0] != first[0] and s.pending_points == 1
    s.commit(s.peek(10)[1], 1)
    assert s.pending_points == 0
    assert (tmp_path / "cursor").stat().st_size == 2 * CURSOR_SLOT.size
    s.close()


def test_failed_append_leaves_no_torn_record(tmp_path):
    s = Spool(tmp_path)
    s.append(pts(1.0))
    size = os.path.getsize(next(tmp_path.glob("*.seg")))
    os.close(s._fd)  # the next write fails as a broken disk would (EBADF is an OSError like ENOSPC)
    s._fd = os.open(os.devnull, os.O_RDONLY)
    try:
        s.append(pts(2.0))
        raise AssertionError("append on a broken file must raise")
    except OSError:
        pass
    assert os.path.getsize(next(tmp_path.glob("*.seg"))) == size
    assert s.pending_points == 1


def test_a_batch_waits_while_the_stream_flows_and_goes_when_it_pauses(tmp_path):
    """The drainer's wait (bench-ingest: the end of a burst sat out the whole batch interval, 1 s, before its last
    write): full batches go at once, a flowing stream is gathered, a pause of `quiet` ends the wait."""
    s = Spool(tmp_path)
    s.append(pts(*range(10)))
    t0 = time.monotonic()
    s.wait_for_batch(10, timeout=30, quiet=5)
    assert time.monotonic() - t0 < 1  # a full batch: no wait
    s.wait_for_batch(5000, timeout=30, quiet=0.2)
    paused = time.monotonic() - t0
    assert paused < 10  # before: the whole timeout (30 s)

    def trickle():
        for v in range(12):
            time.sleep(0.05)
            s.append(pts(float(v)))

    writer = threading.Thread(target=trickle)
    t0 = time.monotonic()
    writer.start()
    s.wait_for_batch(5000, timeout=30, quiet=0.5)
    waited = time.monotonic() - t0
    writer.join()
    assert waited >= 0.6 and s.pending_points == 22  # it waited for the whole trickle, then for the pause
    s.close()


def _records(s: Spool) -> list[bytes]:
    out, pos = [], s._cursor
    while True:
        got, pos = s._read_records(pos, 1 << 30)
        if not got:
            return out
        out += got


def test_a_damaged_record_is_quarantined_and_the_records_after_it_are_kept(tmp_path):
    """Issue 24: one garbled record in the middle of a segment (a card that lies about fsync) made recovery cut
    the rest of the segment — every acknowledged record after it — with one log line and no counter."""
    s = Spool(tmp_path)
    for v in range(10):
        s.append(pts(float(v)))
    first, pos = s.peek(3)  # three records drained: the cursor sits before record 3
    s.commit(pos, 3)
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    rec = len(data) // 10
    data[5 * rec + 10:5 * rec + 14] = b"\x00\xff\x00\xff"  # record 5's body
    seg.write_bytes(bytes(data))
    s = Spool(tmp_path)
    assert s.damaged_records == 1 and s.quarantined_bytes == rec
    left = _records(s)
    assert [r.split(b" ")[1] for r in left] == [f"v={v:.1f}".encode() for v in (3, 4, 6, 7, 8, 9)]
    assert s.pending_points == 6
    bad = list((tmp_path / "quarantine").glob("*.bad"))
    assert len(bad) == 1 and bad[0].read_bytes() == bytes(data[5 * rec:6 * rec])
    s.close()
    s = Spool(tmp_path)  # rewritten: nothing to quarantine again, the cursor still in place
    assert s.damaged_records == 0 and _records(s) == left
    s.close()


def test_damage_before_the_cursor_moves_the_cursor_with_the_segment(tmp_path):
    s = Spool(tmp_path)
    for v in range(6):
        s.append(pts(float(v)))
    _first, pos = s.peek(4)
    s.commit(pos, 4)
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    rec = len(data) // 6
    data[rec + 9] ^= 0x55  # record 1, already drained
    seg.write_bytes(bytes(data))
    s = Spool(tmp_path)
    assert s.damaged_records == 1
    assert [r.split(b" ")[1] for r in _records(s)] == [b"v=4.0", b"v=5.0"]
    s.close()


def test_a_zeroed_tail_is_cut_not_read_as_empty_records(tmp_path):
    """A power cut can leave a file's new size without its data (zeros): length 0 with crc 0 is no record."""
    s = Spool(tmp_path)
    s.append(pts(1.0))
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(bytes(4096))
    s = Spool(tmp_path)
    assert seg.stat().st_size == size and s.damaged_records == 0
    s.append(pts(2.0))
    assert [r.split(b" ")[1] for r in _records(s)] == [b"v=1.0", b"v=2.0"]
    s.close()


def test_the_cursor_is_written_every_interval_and_when_drained(tmp_path):
    s = Spool(tmp_path, cursor_interval_s=3600)
    for v in range(4):
        s.append(pts(float(v)))
    _r, pos = s.peek(1)
    s.commit(pos, 1)  # the first commit after start is due
    written = (tmp_path / "cursor").read_bytes()
    _r, pos = s.peek(1)
    s.commit(pos, 1)
    assert (tmp_path / "cursor").read_bytes() == written  # not yet: within the interval
    _r, pos = s.peek(10)
    s.commit(pos, 2)
    assert (tmp_path / "cursor").read_bytes() != written  # all drained: written at once
    s.close()
