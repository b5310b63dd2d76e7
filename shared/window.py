"""Model inputs from a slot series at an issue time — the ONE implementation used by training and the edge.

Two layouts, both a sequence `[1, steps, features]` of float features:

- `next` (horizon 1): the last `steps` slots up to the issue time T. Step i describes slot s_i (ending at or
  before T) and the slot after it: [v(s_i), v(s_i+1 − 1 day), v(s_i+1 − 7 days), median of the slot s_i+1 over
  the previous 7 days, calendar of s_i+1]. The last step therefore holds what is known about the target.
- `day` (horizon 96): one step per target slot t_j = T + j·15 min, j = 1…96: [v(t_j − k days) for k = 1…7,
  their median, calendar of t_j, mean of the last day up to T, v(T), j / 96].

Values are scaled as (v − mean) / std with the training statistics (the manifest's `window.scaling`). Missing
values are filled with the step's 7-day median, else the mean (scaled 0). The window is *complete* when v(T)
is known and at most `max_missing` of the value features are missing; incomplete windows are not used for
training and make the edge fall back to a baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries

WEEK = 7 * SLOTS_PER_DAY
CALENDAR = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")


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
    # The model predicts the difference to this input feature (scaled by std): "value" = the last slot
    # (persistence) for next-slot models, "median7" = the 7-day median per target slot for day-ahead models.
    residual: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("next", "day"):
            raise ValueError(f"unknown window layout {self.layout!r}")
        if not self.features:
            self.features = feature_names(self.layout)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def history_slots(self) -> int:
        """How many slots up to the issue time the window reads."""
        return (self.steps if self.layout == "next" else 0) + WEEK + 1

    def to_dict(self) -> dict:
        return asdict(self) | {"scaling": {"mean": self.mean, "std": self.std}}

    @classmethod
    def from_dict(cls, doc: dict) -> WindowSpec:
        doc = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**doc)


def feature_names(layout: str) -> list[str]:
    if layout == "next":
        return ["value", "next_yesterday", "next_last_week", "next_median7", *CALENDAR]
    return [f"lag_{k}d" for k in range(1, 8)] + ["median7", *CALENDAR, "level_1d", "last", "step"]


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
    out = np.full(a.shape[0], np.nan)
    ok = ~np.all(np.isnan(a), axis=1)
    if ok.any():
        out[ok] = np.nanmedian(a[ok], axis=1)
    return out


def build_raw(spec: WindowSpec, series: SlotSeries, issue_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled features (steps, F) and a mask of the value features that were missing (steps, n_values)."""
    v = series.values
    last = series.index_of(issue_ns)  # index of the slot ending at the issue time
    if spec.layout == "next":
        idx = np.arange(last - spec.steps + 1, last + 1)
        cur = np.full(len(idx), np.nan)
        ok = (idx >= 0) & (idx < len(v))
        cur[ok] = v[idx[ok]]
        nxt = idx + 1
        lags = _lags(v, nxt, range(1, 8))
        med = _nanmedian_rows(lags)
        values = np.column_stack([cur, lags[:, 0], lags[:, 6], med])
        cal = calendar(series.start_ns + SLOT_NS * nxt)
        raw = np.column_stack([values, cal])
        return raw, np.isnan(values)
    idx = np.arange(last + 1, last + 1 + spec.steps)
    lags = _lags(v, idx, range(1, 8))
    med = _nanmedian_rows(lags)
    recent = v[max(0, last - SLOTS_PER_DAY + 1):last + 1] if 0 <= last < len(v) else np.array([np.nan])
    level = np.nanmean(recent) if np.isfinite(recent).any() else np.nan
    cur = v[last] if 0 <= last < len(v) else np.nan
    n = len(idx)
    values = np.column_stack([lags, med, np.full(n, level), np.full(n, cur)])
    cal = calendar(series.start_ns + SLOT_NS * idx)
    raw = np.column_stack([lags, med, cal, np.full(n, level), np.full(n, cur), np.arange(1, n + 1) / n])
    return raw, np.isnan(values)


def build_input(spec: WindowSpec, series: SlotSeries, issue_ns: int) -> tuple[np.ndarray, bool]:
    """Scaled float32 input [1, steps, F] for the model, and whether the window is complete."""
    raw, missing = build_raw(spec, series, issue_ns)
    last = series.index_of(issue_ns)
    known_last = 0 <= last < len(series.values) and np.isfinite(series.values[last])
    complete = bool(known_last and missing.mean() <= spec.max_missing)
    x = scale_features(spec, raw)
    return x[None].astype(np.float32), complete


def value_columns(spec: WindowSpec) -> list[int]:
    names = spec.features
    if spec.layout == "next":
        return [names.index(n) for n in ("value", "next_yesterday", "next_last_week", "next_median7")]
    return [i for i, n in enumerate(names) if n.startswith("lag_") or n in ("median7", "level_1d", "last")]


def scale_features(spec: WindowSpec, raw: np.ndarray) -> np.ndarray:
    """Scale the kWh columns, filling missing ones with the row's 7-day median (else the mean)."""
    x = raw.astype(np.float64).copy()
    cols = value_columns(spec)
    med_col = spec.features.index("next_median7" if spec.layout == "next" else "median7")
    fill = np.where(np.isnan(x[:, med_col]), spec.mean, x[:, med_col])
    for c in cols:
        col = x[:, c]
        x[:, c] = np.where(np.isnan(col), fill, col)
        x[:, c] = (x[:, c] - spec.mean) / spec.std
    return x


def residual_base(spec: WindowSpec, x: np.ndarray) -> np.ndarray:
    """kWh the model's output is added to (zeros when the spec has no residual); x is one scaled input."""
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
