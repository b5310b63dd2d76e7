"""A real memory limit for a child process, like systemd's MemoryMax= on the Pi (FACTS.md: cgroup v1 here); used by
tests (the agent under its unit's limit) and benchmarks (influxd under a budget).

`MemoryLimit(limit).command(cmd)` wraps a command so that it enters a new memory cgroup before it execs; the
kernel then kills it (OOM) when it goes over, as it would kill the agent's unit. Works with cgroup v1 (the memory
controller mounted at /sys/fs/cgroup/memory) and v2 (memory.max in the unified hierarchy); `unavailable()` says
why a test must skip instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


def _own_path(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            return path
    return "/"


class MemoryLimit:
    def __init__(self, limit_bytes: int, name: str = "home-energy-test"):
        self.limit = limit_bytes
        if (V1 / "memory.limit_in_bytes").exists():
            self.v2 = False
            self.dir = V1 / _own_path("memory").lstrip("/") / f"{name}-{uuid.uuid4().hex[:8]}"
        else:
            self.v2 = True
            self.dir = V2 / _own_path("").lstrip("/") / f"{name}-{uuid.uuid4().hex[:8]}"

    @staticmethod
    def unavailable() -> str | None:
        """Why no memory cgroup can be made here (None: it can)."""
        if os.geteuid() != 0:
            return "memory cgroups need root"
        if not (V1 / "memory.limit_in_bytes").exists() and "memory" not in (
                (V2 / "cgroup.controllers").read_text() if (V2 / "cgroup.controllers").exists() else ""):
            return "no memory cgroup controller mounted"
        return None

    def __enter__(self) -> MemoryLimit:
        self.dir.mkdir()
        (self.dir / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(str(self.limit))
        if not self.v2:
            with contextlib.suppress(OSError):  # no swap: the limit is the limit
                (self.dir / "memory.memsw.limit_in_bytes").write_text(str(self.limit))
        return self

    def command(self, cmd: list[str]) -> list[str]:
        """`cmd`, started inside this cgroup."""
        return ["sh", "-c", f'echo $$ > "{self.dir}/cgroup.procs" && exec "$@"', "sh", *cmd]

    def oom_kills(self) -> int:
        if self.v2:
            text = (self.dir / "memory.events").read_text()
        else:
            text = (self.dir / "memory.oom_control").read_text()
        m = re.search(r"oom_kill (\d+)", text)
        return int(m.group(1)) if m else 0

    def peak_bytes(self) -> int | None:
        f = self.dir / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(f.read_text()) if f.exists() else None

    def __exit__(self, *exc) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the folder goes once its processes have exited
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.2)
