"""Progress on stdout: `progress: <percent> <stage>` lines, parsed by the server's training job (server/jobs.py).

The stage says which model of the run is training ("model 3 of 4: cnn-96 member 2/5: epoch 7") and, once there is
something to extrapolate from, an estimate of the time left ("about 4 min left"). The percentages are weighted by
what each bundle is expected to cost (training.plans: `cost`), so the estimate is the time so far scaled by what is
left — the bar no longer sits at one figure while the day-ahead models train.
"""

from __future__ import annotations

import time

ETA_AFTER_S = 10.0  # no estimate before this much time has passed (TensorFlow's start, the first epoch)
ETA_AFTER_PERCENT = 1.0


class _Run:
    """The current run: when it started and which model of how many is training (one run per process)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.prefix = ""

    def begin_model(self, index: int, count: int) -> None:
        self.prefix = f"model {index} of {count}: "

    def eta(self, percent: float) -> str:
        elapsed = time.monotonic() - self.t0
        if percent < ETA_AFTER_PERCENT or elapsed < ETA_AFTER_S or percent >= 100:
            return ""
        return " — " + time_left(elapsed * (100 - percent) / percent)


_run = _Run()


def time_left(seconds: float) -> str:
    """"about 4 min left", "about 1 min left", "less than a minute left"."""
    minutes = seconds / 60
    if minutes >= 1.5:
        return f"about {round(minutes)} min left"
    return "about 1 min left" if minutes >= 0.75 else "less than a minute left"


def start_run() -> None:
    """A new run (its clock for the estimate)."""
    global _run
    _run = _Run()


def begin_model(index: int, count: int) -> None:
    """Model `index` (1-based) of `count` starts: later stages name it."""
    _run.begin_model(index, count)


def progress(percent: float, stage: str) -> None:
    print(f"progress: {percent:.0f} {_run.prefix}{stage}{_run.eta(percent)}", flush=True)


def log(label: str, text: str) -> None:
    """A line about one bundle (`[cnn-96] …`): the server keeps these in the training job's log."""
    print(f"[{label}] {text}", flush=True)
