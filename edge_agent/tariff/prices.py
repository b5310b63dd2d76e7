"""What a kWh costs in each 15-minute slot (pure functions, no I/O): the `[tariff]` section and dynamic price lists.

Three ways to give the import price, in this order of precedence for a slot:
1. dynamic prices per 15 minutes or per hour, from a retained MQTT topic (`prices_topic`): what Home Assistant's
   Tibber, Nord Pool or ENTSO-E integrations know, published by an automation (docs/home-assistant.md). A price
   applies to the slots that start inside its interval.
2. time-of-use periods (`[[tariff.periods]]`: `from`/`to` local times, optionally `days`);
3. a flat `price` (also the price outside every period).
The feed-in price (`feed_in`) is flat. A slot belongs to the period its start lies in (a slot is labelled by its
end, docs/architecture.md): the slot ending at 06:00 is the last one of a 22:00-06:00 night period.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.schema import SLOT_NS
from shared.series import parse_time_ns

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
START_KEYS = ("start", "start_time", "startsAt", "starts_at", "time", "from", "period_start", "datetime", "date")
END_KEYS = ("end", "end_time", "endsAt", "ends_at", "to", "period_end")
PRICE_KEYS = ("price", "value", "total", "price_per_kwh", "marketprice")
MAX_ENTRIES = 2000  # three weeks of 15-minute prices: a payload is a few days at most


@dataclass
class Period:
    """A time-of-use period: local `from` ≤ slot start < `to` (wrapping midnight when to ≤ from), on `days`."""

    price: float
    start_min: int  # minutes after local midnight
    end_min: int
    days: frozenset[int]  # 0 = Monday

    def covers(self, local: datetime) -> bool:
        if local.weekday() not in self.days:
            return False
        m = local.hour * 60 + local.minute
        if self.start_min < self.end_min:
            return self.start_min <= m < self.end_min
        return m >= self.start_min or m < self.end_min


@dataclass
class TariffConfig:
    enabled: bool = True
    currency: str = "EUR"  # ISO 4217 code: the unit of the cost sensors
    price: float | None = None  # per kWh imported: flat, or outside every period
    feed_in: float = 0.0  # per kWh exported
    timezone: str | None = None  # for periods and "today"; default [forecast] timezone, else UTC
    periods: list = dataclasses.field(default_factory=list)  # [{from, to, price, days?}]
    prices_topic: str | None = None  # retained JSON: dynamic prices per 15 minutes or per hour
    prices_scale: float = 1.0  # dynamic price × scale + add: e.g. 0.001 for EUR/MWh, 1.19 for VAT …
    prices_add: float = 0.0  # … plus grid fees and taxes per kWh

    def __post_init__(self) -> None:
        self.parsed_periods: list[Period] = []  # filled by check()


def _minutes(value, where: str) -> int:
    try:
        hh, mm = (int(x) for x in str(value).split(":"))
        if hh == 24 and mm == 0:
            return 24 * 60
        if not (0 <= hh < 24 and mm in (0, 15, 30, 45)):
            raise ValueError
    except ValueError:
        raise ValueError(f"{where} must be HH:MM on a slot boundary (:00, :15, :30, :45), not {value!r}") from None
    return hh * 60 + mm


def check(tc: TariffConfig, where: str, default_timezone: str) -> TariffConfig:
    """Validate a TariffConfig (errors name the key); fills `timezone` and `parsed_periods`."""
    if not (len(tc.currency) == 3 and tc.currency.isalpha() and tc.currency.isupper()):
        raise ValueError(f"{where}.currency must be a three-letter ISO 4217 code such as EUR, not {tc.currency!r}")
    tc.timezone = tc.timezone or default_timezone
    try:
        ZoneInfo(tc.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}.timezone {tc.timezone!r} is not a known IANA timezone") from None
    for key in ("price", "feed_in", "prices_scale", "prices_add"):
        value = getattr(tc, key)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{where}.{key} must be a finite number")
    periods = []
    for i, p in enumerate(tc.periods):
        w = f"{where}.periods[{i}]"
        if not isinstance(p, dict):
            raise ValueError(f"{w} must be a table {{from, to, price, days}}")
        unknown = set(p) - {"from", "to", "price", "days"}
        if unknown:
            raise ValueError(f"{w}: unknown key(s) {', '.join(sorted(unknown))}; known: days, from, price, to")
        price = p.get("price")
        if not isinstance(price, int | float) or isinstance(price, bool) or not math.isfinite(price):
            raise ValueError(f"{w}.price must be a number (per kWh)")
        if "from" not in p or "to" not in p:
            raise ValueError(f"{w} needs from and to (local HH:MM)")
        start, end = _minutes(p["from"], f"{w}.from"), _minutes(p["to"], f"{w}.to") % (24 * 60)
        if start == end:
            raise ValueError(f"{w}: from and to are equal; a whole day is `price`")
        days = p.get("days", list(DAYS))
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise ValueError(f"{w}.days must list some of {', '.join(DAYS)}")
        periods.append(Period(float(price), start, end, frozenset(DAYS.index(d) for d in days)))
    tc.parsed_periods = periods
    if tc.price is None and not periods and not tc.prices_topic:
        raise ValueError(f"{where} needs a price: price (flat), periods (time of use) or prices_topic (dynamic)")
    if tc.prices_topic is not None and (not tc.prices_topic or any(c in tc.prices_topic for c in "#+\0")):
        raise ValueError(f"{where}.prices_topic {tc.prices_topic!r} is not an MQTT topic one can subscribe to")
    return tc


def configured_price(tc: TariffConfig, slot_end_ns: int) -> float | None:
    """The time-of-use or flat price of the slot ending at slot_end_ns (None: neither covers it)."""
    local = datetime.fromtimestamp((slot_end_ns - SLOT_NS) / 1e9, UTC).astimezone(ZoneInfo(tc.timezone))
    for p in tc.parsed_periods:
        if p.covers(local):
            return p.price
    return tc.price


def _first(entry: dict, keys: tuple[str, ...]):
    for k in keys:
        if entry.get(k) is not None:
            return entry[k]
    return None


def _entries(doc, depth: int = 0) -> list[dict]:
    """Price entries anywhere in the payload: a list of objects, or objects holding such lists (Nord Pool's
    raw_today/raw_tomorrow, Tibber's prices per home, {"today": [...], "tomorrow": [...]})."""
    if isinstance(doc, list):
        if doc and all(isinstance(e, dict) for e in doc):
            return list(doc)
        return []
    if isinstance(doc, dict) and depth < 3:
        out: list[dict] = []
        for value in doc.values():
            out += _entries(value, depth + 1)
        return out
    return []


def _time(value, what: str) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1e9) if value < 1e11 else int(value * 1e6)  # epoch s or ms
    if isinstance(value, str):
        try:
            return parse_time_ns(value)
        except ValueError:
            pass
    raise ValueError(f"prices: {what} {value!r} is not an RFC 3339 time or epoch seconds")


def parse_dynamic(payload: bytes | str, scale: float = 1.0, add: float = 0.0) -> dict[int, float]:
    """A retained price payload → {slot end (ns): price per kWh} for every 15-minute slot it covers.

    Entries: objects with a start (`start`, `start_time`, `startsAt`, `time`, …), a price (`price`, `value`,
    `total`, …) and optionally an end; without an end an entry lasts until the next one starts (the last one as
    long as the one before it, or an hour alone). ValueError says what is wrong; nothing is half taken."""
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError("prices: payload is not JSON (a list of {start, price} objects)") from None
    entries = _entries(doc)
    if not entries:
        raise ValueError("prices: no list of {start, price} objects in the payload")
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"prices: {len(entries)} entries (at most {MAX_ENTRIES})")
    rows = []
    for i, e in enumerate(entries):
        start, price, end = _first(e, START_KEYS), _first(e, PRICE_KEYS), _first(e, END_KEYS)
        if start is None or price is None:
            raise ValueError(f"prices: entry {i} has no start or no price ({', '.join(sorted(e))[:100]})")
        if isinstance(price, str):
            try:
                price = float(price)
            except ValueError:
                raise ValueError(f"prices: entry {i}: price {price!r} is not a number") from None
        if not isinstance(price, int | float) or isinstance(price, bool) or not math.isfinite(price):
            raise ValueError(f"prices: entry {i}: price {price!r} is not a number")
        rows.append([_time(start, f"entry {i} start"), None if end is None else _time(end, f"entry {i} end"),
                     round(float(price) * scale + add, 10)])  # no float noise from the unit conversion
    rows.sort(key=lambda r: r[0])
    for i, r in enumerate(rows):
        if r[1] is None:
            if i + 1 < len(rows):
                r[1] = rows[i + 1][0]
            else:
                r[1] = r[0] + (rows[i][0] - rows[i - 1][0] if i else 3600 * 10**9)
    out: dict[int, float] = {}
    for start, end, price in rows:
        if start % SLOT_NS or end % SLOT_NS or end <= start or end - start > 6 * 3600 * 10**9:
            raise ValueError(f"prices: interval {datetime.fromtimestamp(start / 1e9, UTC):%Y-%m-%d %H:%M} … "
                             f"{datetime.fromtimestamp(end / 1e9, UTC):%H:%M} UTC does not consist of whole "
                             "15-minute slots (at most 6 hours)")
        for slot_start in range(start, end, SLOT_NS):
            out[slot_start + SLOT_NS] = price
    return out
