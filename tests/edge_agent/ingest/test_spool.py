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
