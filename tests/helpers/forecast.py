"""Forecast-test helpers: a test clock, the real meter loaded into influxd, a collector of retained MQTT messages,
forecast rows read back."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from shared.points import Point
from shared.series import iso, parse_time_ns, read_csv
from tools.services import Influxd

ISSUE = datetime(2023, 7, 5, 12, 0, tzinfo=UTC)
CSV = "data/seed_house/raw_data.csv"


class Clock:
    def __init__(self, now: datetime):
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def set(self, now: datetime) -> None:
        with self.lock:
            self.now = now


def load_meter(influxd: Influxd, db: str, until: datetime, days: int = 9, drop: tuple | None = None) -> None:
    rows = read_csv(CSV)
    end = parse_time_ns(iso(int(until.timestamp() * 1e9)))
    sel = (rows.times > end - days * 86400 * 10**9) & (rows.times <= end)
    if drop:
        sel &= ~((rows.times > parse_time_ns(drop[0])) & (rows.times <= parse_time_ns(drop[1])))
    from shared.storage import StorageConfig, open_storage

    open_storage(StorageConfig(url=influxd.url, database=db)).write(
        [Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": float(v)}, int(t))
         for t, v in zip(rows.times[sel], rows.values[sel], strict=True)])


def _decode(payload: bytes):
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):  # "online"/"offline" on the availability topic; a hostile test payload
        return payload.decode(errors="replace")


class Retained:
    """Collects retained/published messages under a topic filter."""

    def __init__(self, port: int, topic: str):
        self.messages: dict[str, dict] = {}
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{time.time_ns()}")
        self.c.on_message = lambda c, u, m: self.messages.__setitem__(m.topic, _decode(m.payload))
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def forecast_rows(influxd, db, where=""):
    res = influxd.query(f'SELECT value_kwh, issued_at FROM forecast {where} GROUP BY *', db=db)["results"][0]
    out = []
    for s in res.get("series", []):
        for t, v, issued in s["values"]:
            out.append({**s["tags"], "time": t, "value": v, "issued_at": issued})
    return out
