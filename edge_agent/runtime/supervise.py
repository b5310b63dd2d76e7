"""Supervised worker threads and the systemd watchdog: never a live process that silently stores nothing.

- A `Worker` runs a loop in a thread. If the loop raises, the exception is logged and counted
  (`thread_restarts`, `thread_restarts_<name>`) and the loop restarts after a backoff (1 s doubling to 30 s).
  A loop that fails `max_failures` times in a row, each time within `healthy_run_s` of its start, is beyond
  repair in this process: the worker calls `on_fatal(name)` and the agent exits non-zero (systemd restarts it).
- Loops call `beat()` on every iteration (and `wait()` beats while they wait), so the agent knows each worker
  is alive. `Watchdog` sends systemd's `WATCHDOG=1` only while every worker has beaten recently: a deadlocked or
  hung thread stops the beat and systemd restarts the agent (unit: `Type=notify`, `WatchdogSec=`).
- `notify()` speaks systemd's notification protocol (a datagram to $NOTIFY_SOCKET, see sd_notify(3)); it does
  nothing when the agent does not run under systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, name: str, loop: Callable[[], None], stop: threading.Event,
                 on_failure: Callable[[str, BaseException], None] | None = None,
                 on_fatal: Callable[[str], None] | None = None, max_failures: int = 10,
                 healthy_run_s: float = 60.0, max_backoff_s: float = 30.0):
        self.name = name
        self._loop = loop
        self._stop = stop
        self._on_failure = on_failure
        self._on_fatal = on_fatal
        self.max_failures = max_failures
        self.healthy_run_s = healthy_run_s
        self.max_backoff_s = max_backoff_s
        self.failures = 0
        self.restarts = 0
        self.fatal = False
        self.last_beat = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """`event.wait(seconds)` in slices of at most a second, beating in between; True if the event is set."""
        deadline = time.monotonic() + seconds
        while True:
            self.beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return event.is_set()
            if event.wait(min(1.0, left)):
                return True

    def age(self) -> float:
        """Seconds since the last beat."""
        return time.monotonic() - self.last_beat

    def _run(self) -> None:
        backoff = 1.0
        while True:
            started = time.monotonic()
            self.beat()
            try:
                self._loop()
                return  # the loop ended because the agent is stopping
            except BaseException as exc:  # whatever kills a worker must be seen and survived
                if isinstance(exc, SystemExit | KeyboardInterrupt) and self._stop.is_set():
                    return
                ran = time.monotonic() - started
                self.failures = 1 if ran >= self.healthy_run_s else self.failures + 1
                log.exception("worker thread %s failed (%d in a row) after %.1f s", self.name, self.failures, ran)
                if self._on_failure:
                    self._on_failure(self.name, exc)
                if self.failures >= self.max_failures:
                    self.fatal = True
                    log.critical("worker thread %s failed %d times in a row: giving up, the agent exits",
                                 self.name, self.failures)
                    if self._on_fatal:
                        self._on_fatal(self.name)
                    return
                if ran >= self.healthy_run_s:
                    backoff = 1.0
                if self.wait(self._stop, backoff):
                    return
                backoff = min(backoff * 2, self.max_backoff_s)
                self.restarts += 1
                log.warning("restarting worker thread %s", self.name)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self.thread.ident is not None:  # started (an agent stopped before it started has nothing to join)
            self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()


def notify(state: str, address: str | None = None) -> bool:
    """Send a systemd notification (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=…`); False if not under
    systemd or the socket refuses."""
    address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify %s failed: %s", state, exc)
        return False


def watchdog_interval_s() -> float | None:
    """Half of the watchdog period systemd asks for ($WATCHDOG_USEC, for this process), else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None


class Watchdog:
    """Beats `WATCHDOG=1` every `interval_s` while `problem()` returns None."""

    def __init__(self, interval_s: float, problem: Callable[[], str | None], stop: threading.Event,
                 address: str | None = None):
        self.interval_s = interval_s
        self._problem = problem
        self._stop = stop
        self._address = address
        self.beats = 0
        self.withheld = 0
        self._last_problem: str | None = None
        self.thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                problem = self._problem()
            except Exception as exc:  # a failing check is a reason not to beat
                problem = f"health check failed: {exc}"
            if problem is None:
                if self._last_problem:
                    log.warning("watchdog: healthy again (was: %s)", self._last_problem)
                self._last_problem = None
                if notify("WATCHDOG=1", self._address):
                    self.beats += 1
            else:
                if self._last_problem is None:
                    log.error("watchdog: not beating, %s (systemd restarts the agent if this lasts)", problem)
                self._last_problem = problem
                self.withheld += 1

    def start(self) -> None:
        self.thread.start()
