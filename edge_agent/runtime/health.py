"""Health counters: thread-safe counts and gauges, logged periodically and written as measurement `agent`."""

from __future__ import annotations

import collections
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


DAY_S = 86400.0


def process_write_bytes(path: str = "/proc/self/io") -> int | None:
    """Bytes this process has caused to be written to storage (write_bytes − cancelled_write_bytes: the page
    cache counts whole pages when they are dirtied); None where the kernel does not say (not Linux)."""
    try:
        with open(path) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["write_bytes"]) - int(fields.get("cancelled_write_bytes", 0))
    except (OSError, ValueError, KeyError):
        return None


class DiskWrites:
    """The agent's own disk writes as health values: `bytes_written` (since start) and `bytes_written_per_day`
    (the rate over the last day, or since start when younger; docs/pi.md has the budget it is compared with).
    Writes journald makes for the agent's log lines are journald's, not counted here."""

    def __init__(self, source=process_write_bytes, window_s: float = DAY_S, min_span_s: float = 60.0):
        self._source = source
        self.window_s, self.min_span_s = window_s, min_span_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._start: int | None = None

    def sample(self, health: Health, now: float | None = None) -> None:
        value = self._source()
        if value is None:
            return
        now = time.monotonic() if now is None else now
        if self._start is None:
            self._start = value
        self._samples.append((now, value))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        health.set("bytes_written", value - self._start)
        t0, v0 = self._samples[0]
        if now - t0 >= self.min_span_s:
            health.set("bytes_written_per_day", round((value - v0) / (now - t0) * DAY_S))
            health.set("bytes_written_span_s", round(now - t0))  # how much time the rate stands for
