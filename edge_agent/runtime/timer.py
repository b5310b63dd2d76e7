"""One clock for the agent's periodic work: the slot timer.

Jobs run at every 15-minute slot boundary plus their own delay, with that boundary as argument, one at a time
and in the order of their delays — so the energy flow (30 s) has written the slot before the forecast (60 s)
reads it. A job can also be triggered (late data, a model activated): it then runs soon with the newest boundary
whose delay has passed. The timer's thread is supervised (edge_agent/runtime/supervise.py); an exception in a job
is logged and counted, never the end of the timer.

The clock is injectable: tests drive it. After a jump (a test, a suspended machine) each job runs once, for the
newest due boundary, not once per missed boundary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.schema import SLOT_NS, SLOT_SECONDS

log = logging.getLogger(__name__)


def floor_slot(t: datetime) -> int:
    """The last slot boundary at or before t, in ns."""
    return int(t.timestamp()) * 1_000_000_000 // SLOT_NS * SLOT_NS


def next_run(now: datetime, delay_s: float) -> datetime:
    """The next slot boundary plus delay_s, strictly after now."""
    t = datetime.fromtimestamp(floor_slot(now) / 1e9, UTC) + timedelta(seconds=delay_s)
    while t <= now:
        t += timedelta(seconds=SLOT_SECONDS)
    return t


@dataclass
class Job:
    name: str
    delay_s: float
    run: Callable[[int], None]  # called with the slot boundary (ns)
    at_start: bool = False  # also run once when the timer starts
    last: int | None = None  # the newest boundary it ran for on schedule
    triggered: float | None = None  # monotonic time after which a triggered run is due
    trigger_boundary: int | None = None
    runs: int = field(default=0)


class SlotTimer:
    def __init__(self, clock: Callable[[], datetime], on_error: Callable[[str, Exception], None] | None = None):
        self.clock = clock
        self.jobs: list[Job] = []
        self._on_error = on_error
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def add(self, name: str, delay_s: float, run: Callable[[int], None], at_start: bool = False) -> None:
        with self._lock:
            self.jobs.append(Job(name, delay_s, run, at_start))
            self.jobs.sort(key=lambda j: j.delay_s)

    def trigger(self, name: str, after_s: float = 0.0, boundary: int | None = None) -> None:
        """Run job `name` after `after_s` seconds (several triggers in that time: one run), with `boundary`
        or else the newest boundary whose delay has passed."""
        with self._lock:
            for job in self.jobs:
                if job.name == name:
                    due = time.monotonic() + after_s
                    job.triggered = due if job.triggered is None else min(job.triggered, due)
                    if boundary is not None:
                        job.trigger_boundary = max(job.trigger_boundary or boundary, boundary)
        self._wake.set()

    def _due(self, job: Job, now: datetime) -> int:
        return floor_slot(now - timedelta(seconds=job.delay_s))

    def run_pending(self) -> float:
        """Run what is due now; returns how long to sleep at most before looking again (seconds)."""
        now = self.clock()
        todo: list[tuple[Job, int]] = []
        wait = 1.0  # the clock may be a test's: look at least every second
        with self._lock:
            for job in self.jobs:
                due = self._due(job, now)
                run: int | None = None
                if job.last is None:  # first look: run now only if asked to (the flow's catch-up)
                    run = due if job.at_start else None
                    job.last = due
                elif due > job.last:
                    run = job.last = due
                if job.triggered is not None:
                    if time.monotonic() >= job.triggered:
                        run = max(run or due, job.trigger_boundary or due)
                        job.triggered = job.trigger_boundary = None
                    else:
                        wait = min(wait, job.triggered - time.monotonic())
                if run is not None:
                    todo.append((job, run))
                wait = min(wait, max(0.01, (next_run(now, job.delay_s) - now).total_seconds()))
        for job, boundary in todo:
            try:
                job.run(boundary)
                job.runs += 1
            except Exception as exc:  # a failing job costs its run, never the timer
                log.exception("%s failed for the slot ending %s", job.name,
                              datetime.fromtimestamp(boundary / 1e9, UTC).isoformat())
                if self._on_error:
                    self._on_error(job.name, exc)
        return 0.0 if todo else wait

    def wake(self) -> None:
        """Look at the clock now (a stop, or a test that moved it)."""
        self._wake.set()

    def loop(self, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> None:
        """The timer thread's body: run what is due, sleep until the next thing is."""
        while not stop.is_set():
            beat()
            wait = self.run_pending()
            if wait > 0 and self._wake.wait(wait):
                self._wake.clear()
