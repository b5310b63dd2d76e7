"""The outdoor temperature for the weather bundles (`cnn-96-weather`, `lstm-96-weather`; shared.weather).

Config (`[weather]`; without the section no temperature is read and weather bundles do not forecast):
```toml
[weather]
timezone = "Europe/Zurich"        # the days the temperature is averaged over (default: [forecast] timezone)
measurement = "sensor"            # the measured outdoor temperature (°C) as the ingest rules store it ("" none)
field = "temperature"
tags = { room = "outdoor" }
forecast_topic = ""               # retained JSON forecast (default <publish topic_prefix>/weather/forecast)
max_age_h = 24.0                  # an older forecast is stale
open_meteo = false                # fetch the forecast from Open-Meteo instead of waiting for one on MQTT
latitude = 47.37
longitude = 8.54
```

The temperature a bundle is given at an issue time T (shared.weather.known_at): for the slots up to T the measured
temperature (slot means of the readings, interpolated), else what the forecasts said for them; for the slots after
T the latest forecast. Every cycle the slots that ended are also written to the agent's own measurement
`weather_slots` (field `temperature_c`, tag `source` = measured | forecast), so that a restart, and training on the
server, find the record even without a measured sensor.

Forecast payloads (retained, on `forecast_topic`; docs/home-assistant.md has the automation that publishes one):
`{"issued_at": RFC 3339, "forecast": [{"datetime": RFC 3339, "temperature": °C, "templow": °C?}, …]}` — Home
Assistant's `weather.get_forecasts` response items, hourly (interpolated per slot) or daily (the day's mean:
(temperature + templow) / 2, or temperature); the bare list and the service's whole response
(`{"weather.home": {"forecast": […]}}`) are read too. Without `issued_at` the first forecast time stands in for it.
Open-Meteo (`open_meteo = true`): GET `open_meteo_url?latitude=…&longitude=…&hourly=temperature_2m&past_days=7&
forecast_days=3&timeformat=unixtime` every `open_meteo_every_min`; its past days fill the record after a restart.

Stale or missing (no forecast, older than `max_age_h`, or not reaching the end of the day-ahead horizon): a weather
bundle does not run, and the bundle of the same kind without the temperature serves, its forecast saying why in
`fallback` (edge_agent/forecast/component.py); both are written and scored by the live skill.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from edge_agent.config import AgentConfig, ConfigError, build_dataclass, setting
from shared import schema
from shared import weather as wx
from shared.points import Point
from shared.schema import DAY_NS, SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries, iso, parse_time_ns

log = logging.getLogger(__name__)

OPEN_METEO_URL = "https://api.open-meteo.com/v1/forecast"
MEASURED, FORECAST = schema.WEATHER_MEASURED, schema.WEATHER_FORECAST
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ENTRIES = 2000  # hourly entries: 80 days


@dataclass
class WeatherConfig:
    enabled: bool = True
    timezone: str = ""  # default: [forecast] timezone
    measurement: str = ""
    field: str = "temperature"
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    max_interp_s: float = 3 * 3600.0  # measured readings further apart leave the slots between unknown
    forecast_topic: str = ""  # default <prefix>/weather/forecast
    max_age_h: float = setting(24.0, check=lambda v: 0 < v <= 24 * 7, wants="between 0 and 168 (hours)")
    open_meteo: bool = False
    latitude: float | None = setting(None, check=lambda v: -90 <= v <= 90, wants="between -90 and 90")
    longitude: float | None = setting(None, check=lambda v: -180 <= v <= 180, wants="between -180 and 180")
    open_meteo_url: str = OPEN_METEO_URL
    open_meteo_every_min: float = setting(60.0, check=lambda v: v >= 5, wants="at least 5 (minutes)")
    open_meteo_timeout_s: float = 20.0


def parse_weather(cfg: AgentConfig, default_timezone: str = "UTC") -> WeatherConfig | None:
    """The [weather] section, validated; None when absent or disabled."""
    if "weather" not in cfg.raw:
        return None
    where = f"{cfg.path}: [weather]"
    wc = build_dataclass(WeatherConfig, cfg.section("weather"), where)
    wc.timezone = wc.timezone or default_timezone
    try:
        wx.WeatherSpec(wc.timezone)
    except wx.WeatherError as exc:
        raise ConfigError(f"{where}.timezone: {exc}") from None
    if wc.open_meteo:
        if wc.latitude is None or wc.longitude is None:
            raise ConfigError(f"{where}: open_meteo needs latitude (-90…90) and longitude (-180…180)")
        if urllib.parse.urlsplit(wc.open_meteo_url).scheme not in ("http", "https"):
            raise ConfigError(f"{where}.open_meteo_url must be an http(s) URL, not {wc.open_meteo_url!r}")
    if wc.measurement and not wc.field:
        raise ConfigError(f"{where}.field must name the temperature field of {wc.measurement!r}")
    return wc if wc.enabled else None


# -- forecast payloads ------------------------------------------------------------------------------------------------
@dataclass
class TemperatureForecast:
    """A forecast as received: °C per slot (slot ends → values) and when and where it was issued."""

    issued_ns: int
    source: str  # "mqtt" | "open-meteo"
    slots: dict[int, float]

    @property
    def last_ns(self) -> int:
        return max(self.slots) if self.slots else 0

    def describe(self) -> str:
        return f"{self.source} forecast issued {iso(self.issued_ns)}"


def _entries(doc) -> tuple[list, str | None]:
    """The forecast items and the issue time from any of the accepted payload shapes."""
    issued = None
    if isinstance(doc, dict):
        issued = doc.get("issued_at")
        if "forecast" in doc:
            doc = doc["forecast"]
        elif len(doc) == 1 and isinstance(next(iter(doc.values())), dict):  # {"weather.home": {"forecast": [...]}}
            doc = next(iter(doc.values())).get("forecast")
    if not isinstance(doc, list) or not doc:
        raise ValueError("weather: forecast must be a non-empty list of {datetime, temperature} items "
                         "(or {\"forecast\": [...]})")
    if len(doc) > MAX_ENTRIES:
        raise ValueError(f"weather: forecast has {len(doc)} items, more than {MAX_ENTRIES}")
    return doc, issued


def _number(item: dict, key: str) -> float | None:
    v = item.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not -90 <= v <= 70:
        raise ValueError(f"weather: {key} {v!r} is not a temperature in °C")
    return float(v)


def parse_forecast(payload: bytes | str, timezone: str, received_ns: int, source: str = "mqtt"
                   ) -> TemperatureForecast:
    """A forecast payload → per-slot temperatures. ValueError names what is wrong."""
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError("weather: forecast payload is not JSON") from None
    items, issued = _entries(doc)
    times, temps, daily = [], [], False
    for item in items:
        if not isinstance(item, dict) or "datetime" not in item:
            raise ValueError("weather: every forecast item needs datetime and temperature")
        try:
            t = parse_time_ns(str(item["datetime"]))
        except ValueError:
            raise ValueError(f"weather: datetime {item['datetime']!r} is not an RFC 3339 time") from None
        high, low = _number(item, "temperature"), _number(item, "templow")
        if high is None:
            raise ValueError("weather: every forecast item needs a temperature")
        daily |= low is not None
        times.append(t)
        temps.append(high if low is None else (high + low) / 2)
    order = np.argsort(times)
    times_a, temps_a = np.array(times, np.int64)[order], np.array(temps)[order]
    daily |= len(times_a) > 1 and float(np.median(np.diff(times_a))) >= 20 * 3600 * 1e9
    slots = _daily_slots(times_a, temps_a, timezone) if daily else _hourly_slots(times_a, temps_a)
    if issued is not None:
        try:
            issued_ns = parse_time_ns(str(issued))
        except ValueError:
            raise ValueError(f"weather: issued_at {issued!r} is not an RFC 3339 time") from None
    else:
        issued_ns = min(int(times_a[0]), received_ns)
    return TemperatureForecast(issued_ns, source, slots)


def _hourly_slots(times: np.ndarray, temps: np.ndarray) -> dict[int, float]:
    start = int(-(-times[0] // SLOT_NS) * SLOT_NS)
    n = int((times[-1] - start) // SLOT_NS) + 2
    series = wx.readings_to_slots(times, temps, start, n)
    return {int(t): float(v) for t, v in zip(series.end_ns, series.values, strict=True) if np.isfinite(v)}


def _daily_slots(times: np.ndarray, temps: np.ndarray, timezone: str) -> dict[int, float]:
    """Each item is the mean of its local day (its datetime's day, a minute after): every slot of that day."""
    days = wx.local_day(times + SLOT_NS // 2 + 60 * 10**9, timezone)
    lo, hi = int(times[0]) - 2 * DAY_NS, int(times[-1]) + 3 * DAY_NS
    ends = np.arange(lo // SLOT_NS * SLOT_NS, hi, SLOT_NS, dtype=np.int64)
    slot_days = wx.local_day(ends, timezone)
    out: dict[int, float] = {}
    for day, temp in zip(days.tolist(), temps.tolist(), strict=True):
        out.update((int(t), float(temp)) for t in ends[slot_days == day])
    return out


def parse_open_meteo(body: bytes, received_ns: int) -> TemperatureForecast:
    """Open-Meteo's JSON (`hourly.time` as unix seconds, `hourly.temperature_2m`) → a forecast."""
    try:
        hourly = json.loads(body)["hourly"]
        times = np.array([int(t) for t in hourly["time"]], np.int64) * 10**9
        temps = np.array([np.nan if v is None else float(v) for v in hourly["temperature_2m"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"weather: Open-Meteo answer without hourly time/temperature_2m: {exc}") from None
    if len(times) != len(temps) or not len(times):
        raise ValueError("weather: Open-Meteo answer has no hourly temperatures")
    return TemperatureForecast(received_ns, "open-meteo", _hourly_slots(times, temps))


def open_meteo_url(wc: WeatherConfig) -> str:
    query = urllib.parse.urlencode({"latitude": wc.latitude, "longitude": wc.longitude, "hourly": "temperature_2m",
                                    "past_days": 7, "forecast_days": 3, "timeformat": "unixtime", "timezone": "GMT"})
    return f"{wc.open_meteo_url}?{query}"


# -- the input --------------------------------------------------------------------------------------------------------
class Weather:
    """The measured record, the forecasts received, and the temperature as known at an issue time."""

    def __init__(self, wc: WeatherConfig, config: AgentConfig, storage, clock: Callable[[], datetime], health):
        self.wc, self.config, self.storage, self.clock, self.health = wc, config, storage, clock, health
        self.topic = wc.forecast_topic or f"{config.publish.topic_prefix}/weather/forecast"
        self._lock = threading.Lock()
        self.latest: TemperatureForecast | None = None
        self.said: dict[int, float] = {}  # slot end → what the latest forecast covering it said (10 days kept)
        self.record: dict[int, tuple[float, str]] = {}  # slot end → (°C, measured | forecast), the past
        self._restored = False
        self._measured_until = 0  # slot end up to which the measured readings were read
        self._written_until = 0  # slot end up to which the record was written to weather_slots
        self._stop = threading.Event()
        self._fetcher: threading.Thread | None = None
        self.client = None

    # -- MQTT and Open-Meteo -----------------------------------------------------------------------------------------
    def start(self) -> None:
        from edge_agent.runtime.mqtt_client import make_client

        c = self.config.mqtt
        self.client = make_client(self.config, f"{c.client_id}-weather", manual_ack=False,
                                  on_thread_failure=lambda exc: self.health.thread_failed("mqtt_weather"))
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda cl, u, msg: self.receive(msg.payload)
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()
        if self.wc.open_meteo:
            self._fetcher = threading.Thread(target=self._fetch_loop, name="open-meteo", daemon=True)
            self._fetcher.start()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, 1)

    def stop(self) -> None:
        self._stop.set()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        if self._fetcher is not None:
            self._fetcher.join(timeout=self.wc.open_meteo_timeout_s + 1)

    def _now_ns(self) -> int:
        return int(self.clock().timestamp() * 1e9)

    def receive(self, payload: bytes, source: str = "mqtt") -> TemperatureForecast | None:
        """A forecast from MQTT; a bad one is counted and logged, the previous one stays."""
        if not payload:
            return None  # a cleared retained topic
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise ValueError(f"weather: forecast payload of {len(payload)} bytes (at most {MAX_PAYLOAD_BYTES})")
            forecast = parse_forecast(payload, self.wc.timezone, self._now_ns(), source)
        except ValueError as exc:
            self.health.incr("weather_invalid")
            log.warning("%s (topic %s; the previous forecast stays)", exc, self.topic)
            return None
        except Exception:  # whatever else a message provokes (deep JSON: RecursionError) costs that message only
            self.health.incr("weather_invalid")
            log.exception("weather: a forecast on %s could not be read; the previous forecast stays", self.topic)
            return None
        self.accept(forecast)
        return forecast

    def accept(self, forecast: TemperatureForecast) -> None:
        with self._lock:
            if self.latest is not None and forecast.issued_ns < self.latest.issued_ns:
                log.info("weather: ignoring a %s older than the one held", forecast.describe())
                return
            self.latest = forecast
            self.said.update(forecast.slots)
            keep = self._now_ns() - 10 * DAY_NS
            self.said = {t: v for t, v in self.said.items() if t > keep}
        self.health.incr("weather_forecasts")
        log.info("weather: %s, %d slots up to %s", forecast.describe(), len(forecast.slots), iso(forecast.last_ns))

    def fetch_open_meteo(self) -> TemperatureForecast:
        url = open_meteo_url(self.wc)
        req = urllib.request.Request(url, headers={"User-Agent": "home-energy-edge-agent"})
        with urllib.request.urlopen(req, timeout=self.wc.open_meteo_timeout_s) as resp:
            body = resp.read(4 * MAX_PAYLOAD_BYTES)
        forecast = parse_open_meteo(body, self._now_ns())
        self.accept(forecast)
        return forecast

    def _fetch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.fetch_open_meteo()
            except Exception as exc:  # network, HTTP or payload errors: the previous forecast stays
                self.health.incr("weather_fetch_errors")
                log.warning("weather: Open-Meteo fetch from %s failed: %s", self.wc.open_meteo_url, exc)
            self._stop.wait(self.wc.open_meteo_every_min * 60)

    # -- the temperature as known at an issue time --------------------------------------------------------------
    def known_at(self, issue_ns: int) -> tuple[SlotSeries | None, str]:
        """(°C per slot as known at issue_ns, provenance) — or (None, why the weather bundles cannot run)."""
        self._update_record(issue_ns)
        with self._lock:
            latest = self.latest
            said = dict(self.said)
        problem = self._problem(latest, issue_ns)
        if problem:
            return None, problem
        history = wx.HISTORY_SLOTS
        start = issue_ns - (history - 1) * SLOT_NS
        ends = start + SLOT_NS * np.arange(history + wx.FORECAST_SLOTS, dtype=np.int64)
        values = np.full(len(ends), np.nan)
        for i, t in enumerate(ends.tolist()):
            if t <= issue_ns:
                v = self.record.get(t)
                values[i] = v[0] if v is not None else said.get(t, np.nan)
            else:
                values[i] = latest.slots.get(t, np.nan)
        measured = self.wc.measurement and any(s == MEASURED for _, s in self.record.values())
        return SlotSeries(start, values), latest.describe() + ("; measured " + self.wc.measurement if measured else "")

    def _problem(self, latest: TemperatureForecast | None, issue_ns: int) -> str:
        if latest is None:
            where = "Open-Meteo" if self.wc.open_meteo else f"MQTT topic {self.topic}"
            return f"no temperature forecast received ({where})"
        age_h = (self._now_ns() - latest.issued_ns) / 3.6e12
        if age_h > self.wc.max_age_h:
            return f"temperature forecast stale: {latest.describe()}, {age_h:.0f} h old (max_age_h {self.wc.max_age_h:g})"
        if latest.last_ns < issue_ns + SLOTS_PER_DAY * SLOT_NS:
            return f"temperature forecast ends at {iso(latest.last_ns)}, before the day ahead ({latest.describe()})"
        return ""

    def _update_record(self, issue_ns: int) -> None:
        """Bring the past record up to issue_ns: read back what was written (first time), the measured readings
        since the last cycle, what the forecasts said for the other slots; write the new slots."""
        first = issue_ns - (wx.HISTORY_SLOTS - 1) * SLOT_NS
        if not self._restored:
            self._restore(first, issue_ns)
        if self.wc.measurement:
            self._read_measured(max(first, self._measured_until - 4 * SLOT_NS), issue_ns)
        with self._lock:
            said = dict(self.said)
        for t in range(max(first, self._written_until + SLOT_NS), issue_ns + 1, SLOT_NS):
            if t not in self.record and t in said:
                self.record[t] = (said[t], FORECAST)
        self.record = {t: v for t, v in self.record.items() if t >= first}
        self._write(issue_ns)

    def _restore(self, first_ns: int, issue_ns: int) -> None:
        try:
            rows = self.storage.query_series(schema.WEATHER_SLOTS, schema.WEATHER_TEMPERATURE_FIELD, _dt(first_ns), _dt(issue_ns + 1))
            self.record.update((int(t), (float(v), FORECAST)) for t, v in rows if t % SLOT_NS == 0)
            self._written_until = max(self.record, default=0)
            self._restored = True
        except Exception as exc:
            self.health.incr("weather_errors")
            log.error("weather: reading back %s failed: %s", schema.WEATHER_SLOTS, exc)

    def _read_measured(self, start_ns: int, issue_ns: int) -> None:
        try:
            rows = self.storage.query_series(self.wc.measurement, self.wc.field, _dt(start_ns - 3 * 3600 * 10**9),
                                             _dt(issue_ns + 3600 * 10**9), self.wc.tags or None)
        except Exception as exc:
            self.health.incr("weather_errors")
            log.error("weather: reading the measured temperature %s.%s failed: %s", self.wc.measurement,
                      self.wc.field, exc)
            return
        if not rows:
            return
        n = int((issue_ns - start_ns) // SLOT_NS) + 1
        times = np.array([r[0] for r in rows], np.int64)
        slots = wx.readings_to_slots(times, np.array([r[1] for r in rows]), start_ns, n, self.wc.max_interp_s)
        newest = int(times.max())
        for t, v in zip(slots.end_ns.tolist(), slots.values.tolist(), strict=True):
            if np.isfinite(v) and t <= newest + SLOT_NS // 2:  # a slot's middle must lie before the newest reading
                self.record[t] = (v, MEASURED)
        self._measured_until = max(self._measured_until, min(issue_ns, newest))

    def _write(self, issue_ns: int) -> None:
        new = sorted(t for t in self.record if self._written_until < t <= issue_ns)
        if not new:
            return
        points = [Point(schema.WEATHER_SLOTS, {schema.WEATHER_SOURCE_TAG: self.record[t][1]},
                        {schema.WEATHER_TEMPERATURE_FIELD: round(float(self.record[t][0]), 3)}, t) for t in new]
        try:
            self.storage.write(points)
            self._written_until = new[-1]
        except Exception as exc:
            self.health.incr("weather_errors")
            log.error("weather: writing %d %s points failed: %s", len(points), schema.WEATHER_SLOTS, exc)

    def status(self) -> dict:
        latest = self.latest
        return {"topic": self.topic, "open_meteo": self.wc.open_meteo, "measured": self.wc.measurement or None,
                "timezone": self.wc.timezone,  # the days the temperature is averaged over: the server's trainings
                "forecast": None if latest is None else {"source": latest.source, "issued_at": iso(latest.issued_ns),
                                                         "until": iso(latest.last_ns)}}


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)
