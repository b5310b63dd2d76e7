"""The spool's own guarantees: records survive a restart, torn tails and torn cursor slots are recovered,
the first release's cursor file is read, a failed append leaves nothing half-written."""

from __future__ import annotations

import os

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
