"""Times on the pages: one format, in the house's time zone (its agent reports its `[forecast] timezone` in the
status, `calendar`), e.g. "2026-12-07 14:15 CET". The overview, which lists houses of any zone, stays in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FORMAT = "%Y-%m-%d %H:%M %Z"


def house_tz(status: dict | None) -> ZoneInfo:
    """The house's zone from its last status; UTC when it has not said (or an older agent)."""
    name = ((status or {}).get("calendar") or {}).get("timezone") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def as_datetime(value) -> datetime | None:
    """Epoch seconds (the server's own records) or an RFC 3339 string (the agent's), as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def fmt(value, tz: ZoneInfo | str = "UTC") -> str:
    """The page's one time format; "—" for no time, the text itself when it is not a time."""
    t = as_datetime(value)
    if t is None:
        return "—" if value in (None, "") else str(value)
    return t.astimezone(ZoneInfo(tz) if isinstance(tz, str) else tz).strftime(FORMAT)
