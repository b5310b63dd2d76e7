"""The demo's replay: why the real year's 34,023 readings become 68,044 MQTT messages (each sent as two, around
it, never on a slot end; the first and the last once), as its output says."""

from __future__ import annotations

from shared.schema import SLOT_NS
from shared.series import read_csv
from tools.demo import CSV, JITTER_S, jittered


def test_each_reading_becomes_two_messages_around_it_never_on_a_slot_end():
    rows = read_csv(CSV)
    times, values = [int(t) for t in rows.times], rows.values.tolist()
    out = jittered(times, values)
    assert (len(times), len(out)) == (34_023, 68_044)  # 2 × 34,023 − 2: the first and the last once
    ns = [int(t.timestamp() * 1e9) for t, _ in out]
    assert not [t for t in ns if t % SLOT_NS == 0]
    gaps = sorted({round(abs(a - b) / 1e9) for a, b in zip(ns[1::2], times[1:], strict=False)})
    assert JITTER_S[0] - 1 <= gaps[0] and gaps[-1] <= JITTER_S[1] + 1
