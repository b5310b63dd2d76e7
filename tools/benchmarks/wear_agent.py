"""The real agent on an accelerated clock, for `make bench-wear`: a simulated day passes in 1/SPEED of a day.

    python -m tools.benchmarks.wear_agent CONFIG SPEED SIM_START ANCHOR_FILE

Until ANCHOR_FILE holds a wall-clock time (epoch seconds), the agent's clock stands at SIM_START (epoch seconds:
history is replayed, the flow computes it); from that time on it runs SPEED times faster than the wall clock. The
slot timer, the flow and the forecast follow this clock; every interval in the config that runs on the wall clock
(group commit, health, cursor) is divided by SPEED by the benchmark that writes the config. Same Agent, same code
as `edge-agent run`: only the clock is injected, as the tests do.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.runtime.logsetup import setup_logging


class ScaledClock:
    def __init__(self, speed: float, sim_start: float, anchor: Path):
        self.speed, self.sim_start, self.anchor = speed, sim_start, anchor
        self._real_start: float | None = None
        self._checked = 0.0

    def __call__(self) -> datetime:
        now = time.time()
        if self._real_start is None and now - self._checked > 0.2:
            self._checked = now
            with contextlib.suppress(OSError, ValueError):
                self._real_start = float(self.anchor.read_text())
        if self._real_start is None:
            return datetime.fromtimestamp(self.sim_start, UTC)
        return datetime.fromtimestamp(self.sim_start + max(0.0, now - self._real_start) * self.speed, UTC)


def main(argv: list[str]) -> int:
    cfg_path, speed, sim_start, anchor = argv
    cfg = load_config(Path(cfg_path))
    setup_logging(cfg.logging.level, cfg.resolve(cfg.logging.file) if cfg.logging.file else None)
    agent = Agent(cfg, clock=ScaledClock(float(speed), float(sim_start), Path(anchor)))
    return agent.run_forever()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
