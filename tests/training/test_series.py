"""Data import edge cases: both CSV variants, plain CSV, reset, gaps, duplicates, out of order, outliers,
quantised readings, power input, and a real influxd query."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shared.schema import SLOT_NS
from shared.series import Readings, counter_to_slots, iso, parse_csv, parse_time_ns, power_to_slots, read_csv
from training.data import InfluxSource, read_influx, to_slots

ANNOTATED = """#group,false,false,true,true,false,false,true,true,true
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string
#default,mean,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,zählername
,,0,2023-01-01T00:00:00Z,2023-01-02T00:00:00Z,2023-01-01T00:15:00Z,100.5,counter,stromzaehler,Hausanschluss
,,0,2023-01-01T00:00:00Z,2023-01-02T00:00:00Z,2023-01-01T00:30:00Z,100.75,counter,stromzaehler,Hausanschluss
,,0,2023-01-01T00:00:00Z,2023-01-02T00:00:00Z,2023-01-01T00:45:00Z,101.125,counter,stromzaehler,Hausanschluss
"""


def test_annotated_and_plain_flux_csv_and_time_value_csv_agree():
    a = parse_csv(ANNOTATED)
    b = parse_csv("\n".join(ln for ln in ANNOTATED.splitlines() if not ln.startswith("#")))
    c = parse_csv("time,value\n2023-01-01T00:30:00Z,100.75\n2023-01-01T00:15:00Z,100.5\n"
                  "2023-01-01T00:45:00Z,101.125\n")
    for r in (b, c):
        assert r.times.tolist() == a.times.tolist() and r.values.tolist() == a.values.tolist()
    s = counter_to_slots(a)
    assert iso(s.start_ns) == "2023-01-01T00:30:00Z"  # labelled by end: counter(00:30) - counter(00:15)
    assert s.values.tolist() == [0.25, 0.375]


def test_real_file_has_reset_and_gaps_masked_never_negative():
    s = counter_to_slots(read_csv("data/seed_house/raw_data.csv"))
    v = s.values
    assert np.nanmin(v) >= 0 and np.isnan(v).sum() > 1000
    # the meter replacement 2023-02-10 09:15 (counter 10688.8 -> 0) is not a negative or huge slot
    i = s.index_of(parse_time_ns("2023-02-10T09:15:00Z"))
    assert np.isnan(v[i - 2:i + 1]).all()
    assert np.nanmax(v) < 2.0
    assert abs(np.nanmean(v) - 0.37) < 0.02


def _r(rows):
    return Readings.from_rows([(parse_time_ns(t), v) for t, v in rows])


def test_reset_duplicates_out_of_order_gap_outlier_and_quantised():
    r = _r([("2023-01-01T00:00:00Z", 10.0), ("2023-01-01T00:30:00Z", 10.5), ("2023-01-01T00:15:00Z", 10.2),
            ("2023-01-01T00:15:00Z", 99.0),  # duplicate timestamp: first kept
            ("2023-01-01T00:45:00Z", 0.3),  # reset
            ("2023-01-01T01:00:00Z", 0.6),
            ("2023-01-01T03:00:00Z", 1.0),  # gap of 2 h: not interpolated (> 30 min)
            ("2023-01-01T03:15:00Z", 1.2), ("2023-01-01T03:30:00Z", 30.0),  # outlier (> 10.9 kWh)
            ("2023-01-01T03:45:00Z", 30.2), ("2023-01-01T04:00:00Z", 31.0), ("2023-01-01T04:15:00Z", 32.0)])
    assert r.duplicates == 1
    s = counter_to_slots(r)
    got = dict(zip([iso(t) for t in s.end_ns], s.values.tolist(), strict=True))
    assert got["2023-01-01T00:15:00Z"] == pytest.approx(0.2)
    assert got["2023-01-01T00:30:00Z"] == pytest.approx(0.3)
    assert np.isnan(got["2023-01-01T00:45:00Z"])  # reset: masked, not negative
    assert got["2023-01-01T01:00:00Z"] == pytest.approx(0.3)
    assert all(np.isnan(got[f"2023-01-01T{hm}:00Z"]) for hm in ("01:15", "02:00", "03:00"))
    assert got["2023-01-01T03:15:00Z"] == pytest.approx(0.2)
    assert np.isnan(got["2023-01-01T03:30:00Z"])  # outlier rule
    assert got["2023-01-01T03:45:00Z"] == pytest.approx(0.2)
    assert np.isnan(got["2023-01-01T04:15:00Z"])  # both readings integers: quantised meter, masked


def test_interpolates_unaligned_counter_readings():
    r = _r([("2023-01-01T00:10:00Z", 1.0), ("2023-01-01T00:20:00Z", 2.0), ("2023-01-01T00:35:00Z", 3.5)])
    s = counter_to_slots(r)
    assert iso(s.start_ns) == "2023-01-01T00:30:00Z"
    assert s.values[0] == pytest.approx(3.0 - 1.5)  # counter(00:30)=3.0, counter(00:15)=1.5


def test_power_samples_integrate_to_kwh():
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    rows = [(int((t0 + timedelta(seconds=60 * i)).timestamp()) * 10**9, 1000.0 if i < 15 else 2000.0)
            for i in range(31)]
    s = power_to_slots(Readings.from_rows(rows))
    assert iso(s.start_ns) == "2023-01-01T00:00:00Z"
    vals = dict(zip([iso(t) for t in s.end_ns], s.values.tolist(), strict=True))
    assert vals["2023-01-01T00:15:00Z"] == pytest.approx(0.25)  # 1 kW for 15 min
    assert vals["2023-01-01T00:30:00Z"] == pytest.approx(0.5)


def test_influx_query_source(influxd_session, influx_db_name):
    from shared.points import Point
    from shared.storage import StorageConfig, open_storage

    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    rows = read_csv("data/seed_house/raw_data.csv")
    n = 500
    st.write([Point("stromzaehler", {"zählername": "Hausanschluss"}, {"counter": float(v)}, int(t))
              for t, v in zip(rows.times[:n], rows.values[:n], strict=True)])
    src = InfluxSource("stromzaehler", "counter", datetime(2022, 9, 1, tzinfo=UTC), datetime(2022, 10, 1, tzinfo=UTC),
                       {"zählername": "Hausanschluss"})
    got = read_influx(st, src)
    assert got.times.tolist() == rows.times[:n].tolist()
    s_db, s_csv = to_slots(got), counter_to_slots(Readings(rows.times[:n], rows.values[:n]))
    assert np.array_equal(s_db.values, s_csv.values, equal_nan=True)
    assert s_db.start_ns == s_csv.start_ns and len(s_db.values) == len(s_csv.values) >= n - 1
    assert s_db.start_ns % SLOT_NS == 0
