"""Model inputs from a slot series at an issue time — the ONE implementation used by training and the edge.

Two layouts, both a sequence `[1, steps, features]` of float features:

- `next` (horizon 1): the last `steps` slots up to the issue time T. Step i describes slot s_i (ending at or
  before T) and the slot after it: [v(s_i), v(s_i+1 − 1 day), v(s_i+1 − 7 days), median of the slot s_i+1 over
  the previous 7 days, calendar of s_i+1]. The last step therefore holds what is known about the target.
- `day` (horizon 96): one step per target slot t_j = T + j·15 min, j = 1…96: [v(t_j − k days) for k = 1…7,
  their median, quantiles of *pools* (`pool<D>d<H>_q<P>`: the P % quantile of the slots within ±H slots of
  t_j's time of day over the previous D days, only slots ending at or before T), calendar of t_j, mean of the
  last day up to T, v(T), j / 96]. A pooled median is a steadier estimate of the slot's typical (median) use
  than the median of seven single values.

Optional calendar input (both layouts): `holiday` — 1 when the slot (the target slot of a step) is a public
holiday of the window's declared calendar (`holidays`: country, subdivision, timezone; shared.calendar), else 0.
A spec that lists `holiday` must declare its calendar; the edge computes exactly that calendar.

Optional weather inputs (both layouts; shared.weather): the outdoor temperature of the step's slot and its day
(`temp_day`, `temp_day_1d`, `temp_day_7d`, `hdd_day`, `cdd_day`, `temp_hour`, `hdh`, `cdh`), computed from the
temperature as known at the issue time (measured before it, forecast after). A spec that lists one must declare
`weather` (timezone, degree-day bases); a window whose temperature features are unknown is incomplete.

Each feature has a name (the manifest lists them); `build_raw` computes exactly the listed columns, so a bundle
trained with an older feature list keeps working as long as its names are known.

Values are scaled as (v − mean) / std with the training statistics (the manifest's `window.scaling`). Missing
values are filled with the step's 7-day median, else the mean (scaled 0). The window is *complete* when v(T)
is known and at most `max_missing` of the value features are missing; incomplete windows are not used for
training and make the edge fall back to a baseline.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from shared import weather as wx
from shared.calendar import HolidayCalendar
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries

WEEK = 7 * SLOTS_PER_DAY
CALENDAR = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")
HOLIDAY = "holiday"  # optional calendar input: the slot is a public holiday of the spec's calendar


@dataclass
class WindowSpec:
    layout: str  # "next" | "day"
    steps: int
    horizon: int
    mean: float = 0.0
    std: float = 1.0
    max_missing: float = 0.2
    step_seconds: int = 900
    features: list[str] = field(default_factory=list)
    # The model predicts the difference to this input feature (scaled by std). Training uses "value" (the last
    # slot: persistence) for next-slot models and "pool7d8_q50" (the median of the same time of day ±2 h over
    # 7 days) for day-ahead models; first-release day-ahead bundles used "median7". None: no residual.
    residual: str | None = None
    # The public-holiday calendar of the `holiday` feature ({"country", "subdivision", "timezone"}), or None.
    holidays: dict | None = None
    # The outdoor temperature's declaration ({"timezone", "heating_base_c", "cooling_base_c"}, shared.weather) when
    # `features` lists temperature features, else None.
    weather: dict | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("next", "day"):
            raise ValueError(f"unknown window layout {self.layout!r}")
        if not self.features:
            self.features = feature_names(self.layout)
        unknown = sorted(n for n in self.features if not is_known_feature(self.layout, n))
        if unknown:
            raise ValueError(f"unknown {self.layout!r} window features: {', '.join(unknown)}")
        if self.residual is not None and self.residual not in self.features:
            raise ValueError(f"residual feature {self.residual!r} is not among the window's features")
        if self.holidays is not None:
            self.holidays = HolidayCalendar.from_dict(self.holidays).to_dict()  # CalendarError is a ValueError
        if HOLIDAY in self.features and self.holidays is None:
            raise ValueError(f"the {HOLIDAY!r} feature needs the window's holidays calendar (country, timezone)")
        if self.weather is not None:
            self.weather = wx.WeatherSpec.from_dict(self.weather).to_dict()  # WeatherError is a ValueError
        if wx.uses_weather(self.features) and self.weather is None:
            raise ValueError("temperature features need the window's weather entry (timezone, degree-day bases)")

    @property
    def calendar(self) -> HolidayCalendar | None:
        return HolidayCalendar.from_dict(self.holidays) if self.holidays else None

    @property
    def weather_spec(self) -> wx.WeatherSpec | None:
        return wx.WeatherSpec.from_dict(self.weather) if self.weather else None

    @property
    def uses_weather(self) -> bool:
        return wx.uses_weather(self.features)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def history_slots(self) -> int:
        """How many slots up to the issue time the window reads."""
        if self.layout == "next":
            return self.steps + WEEK + 1
        pools = [pool_params(n) for n in self.features if POOL.match(n)]
        return max([WEEK] + [days * SLOTS_PER_DAY + half for days, half, _ in pools]) + 1

    def to_dict(self) -> dict:
        return asdict(self) | {"scaling": {"mean": self.mean, "std": self.std}}

    @classmethod
    def from_dict(cls, doc: dict) -> WindowSpec:
        doc = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**doc)


NEXT_VALUES = ("value", "next_yesterday", "next_last_week", "next_median7")
DAY_LAGS = (*(f"lag_{k}d" for k in range(1, 8)), "median7")
DAY_VALUES = (*DAY_LAGS, "level_1d", "last")
POOL = re.compile(r"^pool(\d+)d(\d+)_q(\d+)$")
DAY_POOLS = ("pool3d8_q50", "pool7d4_q50", "pool7d8_q50", "pool7d16_q50", "pool14d4_q25", "pool14d4_q50", "pool14d4_q75",
             "pool28d8_q50")


def feature_names(layout: str) -> list[str]:
    """The default (current) feature list of a layout."""
    if layout == "next":
        return [*NEXT_VALUES, *CALENDAR]
    return [*DAY_LAGS, *DAY_POOLS, *CALENDAR, "level_1d", "last", "step"]


def pool_params(name: str) -> tuple[int, int, float]:
    """`pool<D>d<H>_q<P>` → (days, half-width in slots, quantile)."""
    m = POOL.match(name)
    if not m:
        raise ValueError(f"not a pool feature: {name!r}")
    return int(m[1]), int(m[2]), int(m[3]) / 100


def is_known_feature(layout: str, name: str) -> bool:
    if name == HOLIDAY or name in wx.TEMPERATURE_FEATURES:
        return True
    if layout == "next":
        return name in NEXT_VALUES or name in CALENDAR
    if POOL.match(name):
        days, half, q = pool_params(name)
        return 1 <= days <= 60 and 0 <= half < SLOTS_PER_DAY // 2 and 0 <= q <= 1
    return name in DAY_VALUES or name in CALENDAR or name == "step"


def is_kwh_feature(layout: str, name: str) -> bool:
    if layout == "next":
        return name in NEXT_VALUES
    return name in DAY_VALUES or bool(POOL.match(name))


def calendar(end_ns: np.ndarray) -> np.ndarray:
    """sin/cos of the time of day and of the day of week (UTC) of slots ending at end_ns (the slot's middle)."""
    mid_s = (np.asarray(end_ns, dtype=np.int64) - SLOT_NS // 2) / 1e9
    tod = (mid_s % 86400) / 86400 * 2 * np.pi
    dow = ((mid_s // 86400 + 3) % 7) / 7 * 2 * np.pi  # 1970-01-01 was a Thursday: Monday = 0
    return np.stack([np.sin(tod), np.cos(tod), np.sin(dow), np.cos(dow)], axis=-1)


def _lags(values: np.ndarray, idx: np.ndarray, days: range) -> np.ndarray:
    """values[idx − k·96] for k in days, NaN outside the series; shape (len(idx), len(days))."""
    out = np.full((len(idx), len(days)), np.nan)
    for c, k in enumerate(days):
        j = idx - k * SLOTS_PER_DAY
        ok = (j >= 0) & (j < len(values))
        out[ok, c] = values[j[ok]]
    return out


def _nanmedian_rows(a: np.ndarray) -> np.ndarray:
    return nan_quantiles(a, [0.5])[:, 0]


def _pool_quantiles(values: np.ndarray, idx: np.ndarray, last: int, days: int, half: int,
                    qs: list[float]) -> np.ndarray:
    """Quantiles of values[i − k·96 + h] (k = 1…days, |h| ≤ half, only indices ≤ last) per idx: (len(idx), len(qs))."""
    offsets = (-SLOTS_PER_DAY * np.arange(1, days + 1)[:, None] + np.arange(-half, half + 1)[None, :]).reshape(-1)
    j = idx[:, None] + offsets[None, :]
    ok = (j >= 0) & (j <= last) & (j < len(values))
    pool = np.full(j.shape, np.nan)
    pool[ok] = values[j[ok]]
    return nan_quantiles(pool, qs)


def nan_quantiles(a: np.ndarray, qs: list[float]) -> np.ndarray:
    """Per row of a 2-D array, the quantiles of its finite values (numpy's linear method; NaN for an empty row).

    Same result as np.nanquantile(a, qs, axis=1).T, vectorised (nanquantile loops over rows in Python)."""
    s = np.sort(a, axis=1)  # NaN sorts last
    n = np.sum(~np.isnan(a), axis=1)
    out = np.full((a.shape[0], len(qs)), np.nan)
    rows = np.nonzero(n)[0]
    if len(rows) == 0:
        return out
    s, n = s[rows], n[rows]
    for c, q in enumerate(qs):
        pos = q * (n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        r = np.arange(len(rows))
        out[rows, c] = s[r, lo] + (s[r, hi] - s[r, lo]) * (pos - lo)
    return out


def build_raw(spec: WindowSpec, series: SlotSeries, issue_ns: int, temperature: SlotSeries | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled features (steps, F) in `spec.features` order, and a mask of the value features that were missing.
    `temperature`: °C per slot as known at the issue time (shared.weather), for specs with temperature features."""
    v = series.values
    last = series.index_of(issue_ns)  # index of the slot ending at the issue time
    cols: dict[str, np.ndarray] = {}
    if spec.layout == "next":
        idx = np.arange(last - spec.steps + 1, last + 1)
        cur = np.full(len(idx), np.nan)
        ok = (idx >= 0) & (idx < len(v))
        cur[ok] = v[idx[ok]]
        nxt = idx + 1
        lags = _lags(v, nxt, range(1, 8))
        cols.update(value=cur, next_yesterday=lags[:, 0], next_last_week=lags[:, 6], next_median7=_nanmedian_rows(lags))
        cal_ns = series.start_ns + SLOT_NS * nxt
    else:
        idx = np.arange(last + 1, last + 1 + spec.steps)
        n = len(idx)
        lags = _lags(v, idx, range(1, 8))
        cols.update({f"lag_{k}d": lags[:, k - 1] for k in range(1, 8)}, median7=_nanmedian_rows(lags))
        pools: dict[tuple[int, int], dict[str, float]] = {}
        for name in spec.features:
            if POOL.match(name):
                days, half, q = pool_params(name)
                pools.setdefault((days, half), {})[name] = q
        for (days, half), wanted in pools.items():
            q = _pool_quantiles(v, idx, last, days, half, list(wanted.values()))
            cols.update({name: q[:, c] for c, name in enumerate(wanted)})
        recent = v[max(0, last - SLOTS_PER_DAY + 1):last + 1] if 0 <= last < len(v) else np.array([np.nan])
        level = np.nanmean(recent) if np.isfinite(recent).any() else np.nan
        cur = v[last] if 0 <= last < len(v) else np.nan
        cols.update(level_1d=np.full(n, level), last=np.full(n, cur), step=np.arange(1, n + 1) / n)
        cal_ns = series.start_ns + SLOT_NS * idx
    cols.update(zip(CALENDAR, calendar(cal_ns).T, strict=True))
    if HOLIDAY in spec.features:
        cols[HOLIDAY] = spec.calendar.is_holiday(cal_ns)
    if spec.uses_weather:
        cols.update(wx.features(spec.weather_spec, spec.features, temperature, cal_ns))
    raw = np.column_stack([cols[name] for name in spec.features])
    values = raw[:, value_columns(spec)]
    return raw, np.isnan(values)


def build_input(spec: WindowSpec, series: SlotSeries, issue_ns: int, temperature: SlotSeries | None = None
                ) -> tuple[np.ndarray, bool]:
    """Scaled float32 input [1, steps, F] for the model, and whether the window is complete (the last slot known,
    few kWh inputs missing, every temperature input known)."""
    raw, missing = build_raw(spec, series, issue_ns, temperature)
    last = series.index_of(issue_ns)
    known_last = 0 <= last < len(series.values) and np.isfinite(series.values[last])
    complete = bool(known_last and missing.mean() <= spec.max_missing and weather_known(spec, raw))
    x = scale_features(spec, raw)
    return x[None].astype(np.float32), complete


def weather_columns(spec: WindowSpec) -> list[int]:
    return [i for i, n in enumerate(spec.features) if n in wx.TEMPERATURE_FEATURES]


def weather_known(spec: WindowSpec, raw: np.ndarray) -> bool:
    """Every temperature input of the window is known (True for a window without any)."""
    cols = weather_columns(spec)
    return not cols or bool(np.isfinite(raw[:, cols]).all())


def value_columns(spec: WindowSpec) -> list[int]:
    """Indices of the kWh-valued features (scaled, and filled when missing)."""
    return [i for i, n in enumerate(spec.features) if is_kwh_feature(spec.layout, n)]


def scale_features(spec: WindowSpec, raw: np.ndarray) -> np.ndarray:
    """Scale the kWh columns, filling missing ones with the row's 7-day median (else the mean); temperature columns
    by shared.weather's fixed scaling."""
    x = raw.astype(np.float64).copy()
    cols = value_columns(spec)
    med_col = spec.features.index("next_median7" if spec.layout == "next" else "median7")
    fill = np.where(np.isnan(x[:, med_col]), spec.mean, x[:, med_col])
    for c in cols:
        col = x[:, c]
        x[:, c] = np.where(np.isnan(col), fill, col)
        x[:, c] = (x[:, c] - spec.mean) / spec.std
    for c in weather_columns(spec):
        x[:, c] = wx.scale(spec.features[c], x[:, c])
    return x


def residual_base(spec: WindowSpec, x: np.ndarray) -> np.ndarray:
    """kWh the model's scaled output is added to (the training mean when the spec has no residual); x is one
    scaled input."""
    if spec.residual is None:
        return np.full(spec.horizon, spec.mean)
    x = np.asarray(x).reshape(spec.steps, spec.n_features)
    col = x[:, spec.features.index(spec.residual)].astype(np.float64) * spec.std + spec.mean
    return np.repeat(col[-1], spec.horizon) if spec.layout == "next" else col[:spec.horizon]


def scale_target(spec: WindowSpec, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """kWh targets [n, horizon] → what the model learns, for inputs x [n, steps, F]."""
    base = np.stack([residual_base(spec, xi) for xi in x])
    return ((y - base) / spec.std).astype(np.float32)


def unscale_output(spec: WindowSpec, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Model output for input x → kWh per slot (never negative)."""
    return np.maximum(np.asarray(y, dtype=np.float64).reshape(-1) * spec.std + residual_base(spec, x), 0.0)


def target(series: SlotSeries, issue_ns: int, horizon: int) -> np.ndarray:
    """The actual kWh of the `horizon` slots after issue_ns (NaN where unknown)."""
    return series.window(issue_ns + horizon * SLOT_NS, horizon)
