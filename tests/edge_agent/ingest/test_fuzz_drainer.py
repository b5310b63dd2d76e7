"""The drainer's isolation of refused lines, fuzzed against a real influxd: whatever bytes a spool holds, the
good points are stored, the refused lines are handed to the dead-letter callback, and nothing else escapes."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.ingest.pipeline import write_body
from shared.points import Point, split_lines
from shared.storage import StorageConfig, open_storage

_db = itertools.count()
garbage = st.one_of(st.binary(min_size=1, max_size=60),
                    st.sampled_from([b"X", b"\r", b"#comment", b"m v=1 99999999999999999999", b"\xff\xfe",
                                     b"m,t=\\ v=1", b"Energy\\", b"m v=\"open", b" ", b"m\\", b"time=1",
                                     # quotes: ordinary in names, a string anywhere in a value (issue 23)
                                     b'q,k=a"b seq=1', b'q f"k=1', b'q seq=1"x', b'q seq="x"y"',
                                     b'q,k="v seq=2']))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(layout=st.lists(st.one_of(st.none(), garbage), min_size=1, max_size=40))
def test_isolation_stores_good_points_and_rejects_the_rest(influxd_session, influx_db_name, layout):
    good = [Point("good", {"k": "v"}, {"seq": i}, 1_700_000_000_000_000_000 + i) for i in range(len(layout))]
    body = b"".join((p.to_line() + "\n").encode() if g is None else g + b"\n" for p, g in zip(good, layout,
                                                                                                  strict=True))
    lines = split_lines(body)
    db = f"{influx_db_name}_{next(_db)}"
    storage = open_storage(StorageConfig(url=influxd_session.url, database=db))
    try:
        rejected = [line for line, _error in write_body(storage, body)]
    finally:
        storage.close()
    n_good = sum(1 for g in layout if g is None)
    res = influxd_session.query('SELECT count("seq") FROM "good"', db=db)["results"][0]
    stored = res["series"][0]["values"][0][1] if "series" in res else 0
    assert stored == n_good
    good_lines = {(p.to_line() + "\n").encode() for p, g in zip(good, layout, strict=True) if g is None}
    assert not good_lines & set(rejected)
    assert all(line in lines for line in rejected)
