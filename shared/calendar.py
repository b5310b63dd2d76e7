"""Public holidays as a calendar input: one implementation for training and the edge.

A bundle that uses them lists the `holiday` feature and declares its calendar in the window spec
(`window.holidays = {"country": "DE", "subdivision": "HE" | null, "timezone": "Europe/Berlin"}`); the edge then
computes exactly that calendar, whatever its own config says. A slot is a holiday slot when the local date (in
the calendar's timezone) of its middle is a public holiday of that country and subdivision.

The dates come from the `holidays` package (offline, rules in code; pinned in requirements/edge.txt). Importing it
loads every country's module (~0.5 s and ~19 MB RSS measured here), more than the rest of the forecast needs, so
the dates of a year are computed once per process in a short-lived child process (`python -m shared.calendar`)
and cached; the child runs the same `holiday_dates` function.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from shared.schema import SLOT_NS


class CalendarError(ValueError):
    pass


def holiday_dates(country: str, subdivision: str | None, years: list[int]) -> list[str]:
    """ISO dates of the public holidays (in-process: imports the holidays package)."""
    import holidays

    try:
        cal = holidays.country_holidays(country, subdiv=subdivision, years=years)
    except NotImplementedError:
        raise CalendarError(f"holidays: unknown country {country!r}") from None
    except Exception as exc:  # an unknown subdivision raises NotImplementedError or ValueError by version
        raise CalendarError(f"holidays: {country}/{subdivision}: {exc}") from None
    return sorted(d.isoformat() for d in cal)


@functools.lru_cache(maxsize=64)
def _year(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """One year's holidays, computed in a child process (keeps the package out of the agent's memory)."""
    r = subprocess.run([sys.executable, "-m", "shared.calendar", country, subdivision or "", str(year)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise CalendarError((r.stderr.strip().splitlines() or [f"holidays for {country} {year} failed"])[-1])
    return frozenset(date.fromisoformat(d) for d in json.loads(r.stdout))


@dataclass(frozen=True)
class HolidayCalendar:
    country: str
    subdivision: str | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not (isinstance(self.country, str) and len(self.country) in (2, 3) and self.country.isalpha()
                and self.country.isupper()):
            raise CalendarError(f"holidays.country must be an ISO 3166 code like 'DE', not {self.country!r}")
        if self.subdivision is not None and not (isinstance(self.subdivision, str) and self.subdivision):
            raise CalendarError("holidays.subdivision must be a non-empty code or null")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise CalendarError(f"holidays.timezone {self.timezone!r} is not a known IANA timezone") from None

    @classmethod
    def from_dict(cls, doc: dict) -> HolidayCalendar:
        if not isinstance(doc, dict) or "country" not in doc:
            raise CalendarError("holidays must be an object with country, subdivision and timezone")
        return cls(doc["country"], doc.get("subdivision"), doc.get("timezone", "UTC"))

    @classmethod
    def parse(cls, code: str, timezone: str = "UTC") -> HolidayCalendar:
        """`DE` or `DE-HE` (ISO 3166 country, optional subdivision) as written in configs and on the command line;
        the format is checked, not whether the package knows it (`check`)."""
        if not isinstance(code, str):
            raise CalendarError(f"holidays must be a code like 'DE' or 'DE-HE', not {code!r}")
        country, _, subdivision = code.strip().partition("-")
        return cls(country, subdivision or None, timezone)

    @property
    def code(self) -> str:
        return self.country + (f"-{self.subdivision}" if self.subdivision else "")

    def to_dict(self) -> dict:
        return {"country": self.country, "subdivision": self.subdivision, "timezone": self.timezone}

    def check(self) -> HolidayCalendar:
        """This calendar; CalendarError if the package does not know its country/subdivision."""
        _year(self.country, self.subdivision, 2024)
        return self

    def is_holiday(self, end_ns: np.ndarray) -> np.ndarray:
        """1.0 for slots (by end time) whose middle falls on a public holiday in the local timezone, else 0.0."""
        mids = (np.asarray(end_ns, dtype=np.int64) - SLOT_NS // 2) // 10**9
        hours = mids // 3600
        out = np.zeros(len(mids))
        for h in np.unique(hours).tolist():  # UTC offsets change on whole UTC hours (DST), never inside one
            sel = hours == h
            offset = _utc_offset_s(self.timezone, h)
            for day in np.unique((mids[sel] + offset) // 86400).tolist():
                local = date.fromordinal(date(1970, 1, 1).toordinal() + day)
                if local in _year(self.country, self.subdivision, local.year):
                    out[sel & ((mids + offset) // 86400 == day)] = 1.0
        return out


@functools.lru_cache(maxsize=4096)
def _utc_offset_s(timezone: str, utc_hour: int) -> int:
    offset = datetime.fromtimestamp(utc_hour * 3600, UTC).astimezone(ZoneInfo(timezone)).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def main(argv: list[str]) -> int:
    country, subdivision, year = argv
    try:
        print(json.dumps(holiday_dates(country, subdivision or None, [int(year)])))
    except CalendarError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
