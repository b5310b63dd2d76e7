"""Health counters: thread-safe counts and gauges, logged periodically and written as measurement `agent`."""

from __future__ import annotations

import threading
import time

from shared.points import Point
from shared.schema import AGENT

# Always reported (0 until they happen), so dashboards and alerts see a series from the start.
STANDARD_COUNTERS = ("received", "spooled", "stored", "rejected", "retries", "mqtt_disconnects", "forecast_cycles",
                     "forecast_errors", "inference_errors", "flow_slots_written", "flow_errors", "ignored",
                     "numeric_text_skipped")


class Health:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(STANDARD_COUNTERS, 0)
        self._gauges: dict[str, float] = {}
        self.started = time.time()

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def thread_failed(self, name: str, exc: BaseException | None = None) -> None:
        """A supervised thread survived a failure (restarted): `thread_restarts` and `thread_restarts_<name>`."""
        self.incr("thread_restarts")
        self.incr(f"thread_restarts_{name}")

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def get(self, name: str) -> float:
        with self._lock:
            return self._counts.get(name, self._gauges.get(name, 0))

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            snap: dict[str, float] = {**self._counts, **self._gauges}
        snap["uptime_s"] = round(time.time() - self.started, 1)
        return snap

    def point(self, host: str, time_ns: int | None = None) -> Point:
        fields = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in self.snapshot().items()}
        return Point(AGENT, {"host": host}, fields, time_ns or time.time_ns())
