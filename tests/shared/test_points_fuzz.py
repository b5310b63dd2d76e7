"""What `Point.validate` accepts, a real InfluxDB 1.x stores exactly as given (hypothesis against influxd).

This is where the name rules in shared/points.py come from: InfluxDB 1.6.7 keeps escape backslashes literally
(`a\\b` written as `a\\\\b` comes back with two backslashes), refuses `time` as a tag or field key and a trailing
backslash, and treats a line starting with `#` as a comment. Every generated point that validates must come back
from a query with the same measurement, tags, fields and time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.points import Point
from shared.storage import StorageConfig, open_storage

# Everything validate() accepts: no control characters (Cc), no backslash, no surrogates.
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\")
names = st.text(NAME_CHARS, min_size=1, max_size=12) | st.sampled_from(
    ["a b", "a,b", "a=b", 'a"b', "ä€😀", "x#", "_field", " ", "a,=b c", "\u2028", "\u0085"])


_db = itertools.count()


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(measurement=names.filter(lambda m: not m.startswith("#")), tags=st.dictionaries(names.map(lambda s: "t" + s), names, max_size=3),
       fields=st.dictionaries(names.map(lambda s: "f" + s), st.one_of(
           st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-2**63 + 1, 2**63 - 1),
           st.booleans(), st.text(NAME_CHARS, max_size=12)), min_size=1, max_size=3),
       t=st.integers(-2**62, 2**62))
def test_validated_points_round_trip_through_influxd(influxd_session, influx_db_name, measurement, tags, fields, t):
    p = Point(measurement, tags, fields, t)
    p.validate()  # nothing generated here may be refused: validate must not be stricter than needed
    # a database per example: a field's type is fixed per measurement once written
    storage = open_storage(StorageConfig(url=influxd_session.url, database=f"{influx_db_name}_{next(_db)}"))
    try:
        storage.write([p])
        rows = storage.query(f"SELECT * FROM {quote_ident(measurement)} WHERE time = {t}")
    finally:
        storage.close()
    assert len(rows) == 1, (p.to_line(), rows)
    row = rows[0]
    assert row["_measurement"] == measurement
    assert row["time"] == t
    for k, v in tags.items():
        assert row[k] == v, (k, p.to_line())
    for k, v in fields.items():
        got = row[k]
        if isinstance(v, float):
            assert math.isclose(got, v, rel_tol=1e-15, abs_tol=0) or got == v, (k, v, got)
        else:
            assert got == v, (k, v, got, p.to_line())


@pytest.mark.parametrize("line, why", [
    ("m,d=a\\ v=1 1", "a trailing backslash escapes the separator after it"),
    ("m time=1 1", "1.x refuses `time` as a field key"),
    ("m,time=x v=1 1", "1.x refuses `time` as a tag key"),
    ("#m v=1 1", "a leading # makes the line a comment"),
])
def test_what_validate_refuses_influxd_cannot_take(influxd_session, influx_db_name, line, why):
    status = influxd_session.write_raw(influx_db_name, line.encode())
    stored = influxd_session.query('SELECT count(*) FROM /.*/', db=influx_db_name)["results"][0].get("series")
    assert status != 204 or not stored, why
    name = line.split(" ")[0].split(",")[0]
    tags = dict(kv.split("=") for kv in line.split(" ")[0].split(",")[1:])
    field_key = line.split(" ")[1].split("=")[0]
    with pytest.raises(ValueError):
        Point(name, {k.replace("\\ ", " "): v.rstrip(" ") for k, v in tags.items()}, {field_key: 1.0}, 1).validate()


def test_backslashes_are_kept_literally_by_influxdb_1x(influxd_session, influx_db_name):
    """Why names with a backslash are refused: 1.x keeps escape backslashes (2.x removes them)."""
    assert influxd_session.write_raw(influx_db_name, b"m,d=a\\\\b v=1 1") == 204
    rows = influxd_session.query('SELECT * FROM "m"', db=influx_db_name)["results"][0]["series"][0]["values"]
    assert rows[0][1] == "a\\\\b"  # written escaped (a\\\\b), stored with both backslashes


def test_numpy_floats_are_written_as_numbers():
    """np.float64 is a float, but its repr under numpy 2 is `np.float64(…)`, which InfluxDB refuses as an invalid
    number (found writing hand-made forecast points in a test)."""
    line = Point("m", {}, {"v": np.float64(0.25), "w": np.float32(1.5).item()}, 1).to_line()
    assert line == "m v=0.25,w=1.5 1"
