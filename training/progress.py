"""Progress on stdout: `progress: <percent> <stage>` lines, parsed by the server's training job (server/jobs.py)."""

from __future__ import annotations


def progress(percent: float, stage: str) -> None:
    print(f"progress: {percent:.0f} {stage}", flush=True)


def log(label: str, text: str) -> None:
    """A line about one bundle (`[cnn-96] …`): the server keeps these in the training job's log."""
    print(f"[{label}] {text}", flush=True)
