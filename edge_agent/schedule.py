"""Slot-boundary arithmetic for the periodic components (flow, forecast)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.schema import SLOT_NS, SLOT_SECONDS


def floor_slot(t: datetime) -> int:
    """The last slot boundary at or before t, in ns."""
    return int(t.timestamp()) * 1_000_000_000 // SLOT_NS * SLOT_NS


def next_run(now: datetime, delay_s: float) -> datetime:
    """The next slot boundary plus delay_s, strictly after now."""
    t = datetime.fromtimestamp(floor_slot(now) / 1e9, UTC) + timedelta(seconds=delay_s)
    while t <= now:
        t += timedelta(seconds=SLOT_SECONDS)
    return t
