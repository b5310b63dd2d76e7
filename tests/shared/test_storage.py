"""Storage against a real influxd 1.x (and a real 2.x server when one is configured)."""

import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.points import Point
from shared.storage import StorageConfig, StorageError, open_storage

T0 = datetime(2023, 1, 1, tzinfo=UTC)


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def test_points_line_protocol_escaping():
    p = Point("stromzaehler", {"zählername": "Haus anschluss", "a,b": "x=y"}, {"counter": 1.5, "n": 3, "s": 'a"b'},
              7)
    assert p.to_line() == 'stromzaehler,a\\,b=x\\=y,zählername=Haus\\ anschluss counter=1.5,n=3i,s="a\\"b" 7'
    with pytest.raises(ValueError):
        Point("m", {}, {"v": float("nan")}, 1).validate()


def test_influx1_write_and_query_series(influxd_session):
    st = open_storage(StorageConfig(url=influxd_session.url, database="storage_t1"))
    pts = [Point("EnergyMeter", {"device_id": "m1", "zählername": "Hausanschluss"},
                 {"EnergyIn": 100.0 + i}, _ns(T0 + timedelta(minutes=15 * i))) for i in range(10)]
    pts.append(Point("EnergyMeter", {"device_id": "m2"}, {"EnergyIn": 5.0}, _ns(T0)))
    st.write(pts)
    series = st.query_series("EnergyMeter", "EnergyIn", T0, T0 + timedelta(hours=1), {"device_id": "m1"})
    assert series == [(_ns(T0 + timedelta(minutes=15 * i)), 100.0 + i) for i in range(4)]
    rows = st.query('SELECT count("EnergyIn") FROM "EnergyMeter" GROUP BY "zählername"')
    assert {r.get("zählername", ""): r["count"] for r in rows} == {"Hausanschluss": 10, "": 1}
    assert st.ping()
    st.close()


def test_influx1_bad_data_is_permanent_error_and_down_is_retryable(influxd):
    st = open_storage(StorageConfig(url=influxd.url, database="d"))
    st.write([Point("m", {}, {"v": 1.0}, 1)])
    with pytest.raises(StorageError) as err:  # type conflict: float field then string
        st.write([Point("m", {}, {"v": "text"}, 2)])
    assert err.value.retryable is False and err.value.status == 400
    influxd.stop()
    with pytest.raises(StorageError) as err:
        st.write([Point("m", {}, {"v": 2.0}, 3)])
    assert err.value.retryable is True
    assert not st.ping()
    influxd.start()
    st.write([Point("m", {}, {"v": 2.0}, 3)])
    assert [r["v"] for r in st.query('SELECT v FROM m')] == [1.0, 2.0]


def test_influx1_auth_errors_are_clear(tmp_path):
    from tools.services import Influxd

    with Influxd(tmp_path / "auth", auth=True) as db:
        db.query("CREATE USER admin WITH PASSWORD 'pw' WITH ALL PRIVILEGES", method="POST")
        good = open_storage(StorageConfig(url=db.url, database="d", username="admin", password="pw"))
        good.write([Point("m", {}, {"v": 1.0}, 1)])
        bad = open_storage(StorageConfig(url=db.url, database="d", username="admin", password="wrong"))
        with pytest.raises(StorageError) as err:
            bad.write([Point("m", {}, {"v": 1.0}, 2)])
        assert err.value.status == 401 and "pw" not in str(err.value) and "wrong" not in str(err.value)
        assert "wrong" not in repr(bad.config)


@pytest.mark.influxdb2
def test_influx2_write_and_query_series(influxdb_v2):
    st = open_storage(StorageConfig(version=2, url=influxdb_v2["url"], token=influxdb_v2["token"],
                                    org=influxdb_v2["org"], bucket=influxdb_v2["bucket"]))
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    st.write([Point("storage_t2", {"device_id": "m1"}, {"EnergyIn": float(i)}, _ns(base + timedelta(minutes=i)))
              for i in range(5)])
    series = st.query_series("storage_t2", "EnergyIn", base, base + timedelta(minutes=3), {"device_id": "m1"})
    assert [v for _, v in series] == [0.0, 1.0, 2.0]
    with pytest.raises(StorageError):
        st.write([Point("storage_t2", {"device_id": "m1"}, {"EnergyIn": "text"}, _ns(base))])


def test_influx1_a_trickling_answer_cannot_hold_a_request(tmp_path):
    """Issue 23, item 8: a database that sends one byte every second (below the socket timeout, which restarts
    with every byte) held the drainer indefinitely. Each request is now whole within storage.deadline_s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n":
                    if stop.wait(1.0):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    storage = open_storage(StorageConfig(url=f"http://127.0.0.1:{listener.getsockname()[1]}", database="x",
                                         timeout_s=2.0, deadline_s=3.0, create_database=False))
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageError, match="storage.deadline_s") as info:
            storage.write_lines(b"m v=1 1\n")
        assert info.value.retryable  # the drainer keeps the points and tries again
        assert time.monotonic() - t0 < 10  # the whole answer would take 45 s
    finally:
        stop.set()
        listener.close()
        storage.close()
