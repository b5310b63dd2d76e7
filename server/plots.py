"""Charts as plotly.js figures (JSON: `data` + `layout`), drawn in the browser by the plotly.js that the `plotly`
wheel carries (served from the installed package, `PLOTLY_JS`; never a CDN: the server may have no internet).

Why plotly: a kept charting library installable with pip (npm is not reachable here), with axes, units, hover
values and zoom out of the box; the server only builds JSON (plotly's Python package is not imported per request).
"""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from shared.schema import SLOT_NS
from shared.series import iso

KWH_SLOT = "kWh per 15 min"
COLORS = {"actual": "#555555", "forecast": "#1f6feb", "p80": "#b35900", "baseline": "#bf8700",
          "band": "rgba(31,111,235,0.18)", "said": "#8250df", "said_band": "rgba(130,80,223,0.12)"}
ENERGY_COLORS = {"house": "#1f6feb", "grid_import": "#6e7781", "grid_export": "#bf8700", "pv": "#f2b705",
                 "battery_charge": "#1a7f37", "battery_discharge": "#2da44e"}
ENERGY_LABELS = {"house": "house", "grid_import": "from the grid", "grid_export": "to the grid", "pv": "PV",
                 "battery_charge": "battery charged", "battery_discharge": "battery discharged"}
LOCAL_FORMAT = "%Y-%m-%d %H:%M"  # plotly date strings carry no zone: the axis title names it
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
NAME_COLORS = {"cnn-1": "#1f6feb", "lstm-1": "#8250df", "cnn-96": "#1a7f37", "lstm-96": "#bf8700"}


@lru_cache(maxsize=1)
def plotly_js() -> tuple[str, bytes, bytes]:
    """(version, plotly.min.js, its gzip) from the installed `plotly` package, read once per process."""
    import importlib.metadata

    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    body = path.read_bytes()
    return importlib.metadata.version("plotly"), body, gzip.compress(body, 6)


def local_time(ns: int, tz: ZoneInfo) -> str:
    """A slot end as the charts show it: the house's local time, to the minute."""
    return datetime.fromtimestamp(ns / 1e9, UTC).astimezone(tz).strftime(LOCAL_FORMAT)


def _local_iso(text: str, tz: ZoneInfo) -> str:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(tz).strftime(LOCAL_FORMAT)


def localize(fig_json: str, tz: ZoneInfo) -> str:
    """A stored figure (times in UTC, ISO with `Z`) in the house's time zone: every x value and shape position
    that is a UTC time, and the x axis title. Figures registered before keep working: only their times change."""
    fig = json.loads(fig_json)
    conv = lambda v: _local_iso(v, tz) if isinstance(v, str) and _ISO.fullmatch(v) else v  # noqa: E731
    for trace in fig.get("data", []):
        if isinstance(trace.get("x"), list):
            trace["x"] = [conv(v) for v in trace["x"]]
    layout = fig.setdefault("layout", {})
    for shape in layout.get("shapes", []) or []:
        for k in ("x0", "x1"):
            if k in shape:
                shape[k] = conv(shape[k])
    if isinstance(layout.get("xaxis"), dict):
        layout["xaxis"] |= {"title": {"text": f"time ({tz.key})", "standoff": 4}, "automargin": True}
    return to_json(fig)


def _layout(title: str, y_title: str, **extra) -> dict:
    return {"title": {"text": title, "font": {"size": 13}}, "height": 320,
            "margin": {"l": 60, "r": 16, "t": 36, "b": 100}, "hovermode": "x unified",
            "xaxis": {"title": {"text": "time (UTC)", "standoff": 4}, "type": "date", "automargin": True},
            "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
            "legend": {"orientation": "h", "y": -0.38, "yanchor": "top"}, **extra}


def _clean(values) -> list[float | None]:
    """JSON numbers, with gaps (NaN) as null: plotly breaks the line there."""
    return [round(float(v), 4) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def to_json(fig: dict) -> str:
    return json.dumps(fig, separators=(",", ":"), allow_nan=False)


def _band(times: list, p10, p90, name: str, color: str) -> list[dict]:
    """The P10–P90 band as two traces: the lower edge, then the upper one filled down to it."""
    edge = {"type": "scatter", "mode": "lines", "x": times, "line": {"width": 0}, "hoverinfo": "skip",
            "showlegend": False, "legendgroup": name}
    return [edge | {"name": f"{name} P10", "y": _clean(p10)},
            edge | {"name": name, "y": _clean(p90), "fill": "tonexty", "fillcolor": color, "showlegend": True}]


def forecast_vs_actual(first_slot_end_ns: int, actual: np.ndarray, forecast: np.ndarray, title: str,
                       baseline: tuple[str, np.ndarray] | None = None,
                       band: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """Forecast and actual consumption per slot (x: slot end, UTC), with the best naive baseline (name, values)
    and the model's P10–P90 band when given, as a figure's JSON."""
    times = [iso(first_slot_end_ns + i * SLOT_NS) for i in range(len(actual))]
    hover = "%{y:.3f} kWh"
    data = _band(times, band[0], band[1], "P10–P90", COLORS["band"]) if band is not None else []
    data += [{"type": "scatter", "mode": "lines", "name": "actual", "x": times, "y": _clean(actual),
              "line": {"color": COLORS["actual"], "width": 1.2}, "hovertemplate": hover}]
    if baseline is not None:
        data.append({"type": "scatter", "mode": "lines", "name": f"best simple guess: {baseline[0]}", "x": times,
                     "y": _clean(baseline[1]), "line": {"color": COLORS["baseline"], "width": 1.1, "dash": "dot"},
                     "hovertemplate": hover})
    data.append({"type": "scatter", "mode": "lines", "name": "forecast", "x": times, "y": _clean(forecast),
                 "line": {"color": COLORS["forecast"], "width": 1.6}, "hovertemplate": hover})
    return to_json({"data": data, "layout": _layout(title, KWH_SLOT)})


def energy_days(days: list[dict], fields: list[str], tz: ZoneInfo, title: str) -> str:
    """kWh per local day and field (grouped bars): the last days of the homeowner's view."""
    x = [d["date"] for d in days]
    data = [{"type": "bar", "name": ENERGY_LABELS.get(f, f), "x": x, "y": [d.get(f) for d in days],
             "marker": {"color": ENERGY_COLORS.get(f, "#444")}, "hovertemplate": "%{y:.2f} kWh"} for f in fields]
    layout = _layout(title, "kWh per day", barmode="group")
    layout["xaxis"] = {"title": {"text": f"day ({tz.key})"}, "type": "category"}
    return to_json({"data": data, "layout": layout})


def next_day(view: dict, tz: ZoneInfo, title: str) -> str:
    """The homeowner's forecast chart: the next 24 h (P50 and the P10–P90 band), what was said a day ahead (with
    its band) and the actual consumption of the last 24 h, a line at now; times in the house's zone."""
    hover = "%{y:.3f} kWh"
    data: list[dict] = []
    for key, label, color, band_color, dash in (("said", "said a day ahead", COLORS["said"], COLORS["said_band"],
                                                 "dash"),
                                                ("latest", "forecast", COLORS["forecast"], COLORS["band"], "solid")):
        b = view.get(key)
        if b is None:
            continue
        times = [local_time(int(t), tz) for t in b.t]
        if b.has_band:
            data += _band(times, b.p10, b.p90, f"{label} P10–P90", band_color)
        data.append({"type": "scatter", "mode": "lines", "name": f"{label} ({b.name})", "x": times,
                     "y": _clean(b.value), "line": {"color": color, "width": 1.6, "dash": dash},
                     "hovertemplate": hover})
    act = view.get("actual") or {}
    if act:
        ts = sorted(act)
        data.append({"type": "scatter", "mode": "lines", "name": "actual", "x": [local_time(t, tz) for t in ts],
                     "y": _clean([act[t] for t in ts]), "line": {"color": COLORS["actual"], "width": 1.6},
                     "hovertemplate": hover})
    now = local_time(view["now_ns"], tz)
    shapes = [{"type": "line", "yref": "paper", "x0": now, "x1": now, "y0": 0, "y1": 1,
               "line": {"color": "#c62828", "width": 1, "dash": "dot"}}]
    layout = _layout(title, KWH_SLOT, shapes=shapes,
                     annotations=[{"x": now, "yref": "paper", "y": 1, "text": "now", "showarrow": False,
                                   "yanchor": "bottom", "font": {"size": 11, "color": "#c62828"}}])
    layout["xaxis"]["title"]["text"] = f"time ({tz.key})"
    return to_json({"data": data, "layout": layout})


def _line(s: dict, series: list[dict]) -> dict:
    """A colour per bundle name; the first version listed (the active one) solid, older ones dotted."""
    first = next(x for x in series if x["name"] == s["name"]) is s
    return {"color": NAME_COLORS.get(s["name"], "#444"), "width": 1.6 if first else 1.2,
            "dash": "solid" if first else "dot"}


def skill_over_time(series: list[dict], validation: dict[str, float | None], title: str) -> str:
    """Live 7-day skill in % per model name and version (`series`: {"name", "version", "t": [iso], "skill":
    [fraction]}), with each active model's validation skill as a dashed line. 0 % is the best naive baseline."""
    data = [{"type": "scatter", "mode": "lines", "name": f"{s['name']} {s['version']}", "x": s["t"],
             "y": [None if v is None else round(100 * v, 2) for v in s["skill"]], "line": _line(s, series),
             "hovertemplate": "%{y:.1f} %"} for s in series]
    shapes = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
               "line": {"color": "#c62828", "width": 1}}]
    for name, v in validation.items():
        if v is not None:
            shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": round(100 * v, 2),
                           "y1": round(100 * v, 2), "line": {"color": NAME_COLORS.get(name, "#444"), "width": 1,
                                                             "dash": "dash"}})
    layout = _layout(title, "skill vs best baseline (%)", shapes=shapes)
    layout["yaxis"]["rangemode"] = "normal"
    return to_json({"data": data, "layout": layout})


def coverage_over_time(series: list[dict], title: str, nominal: float = 0.8) -> str:
    """Share of actual slots inside the P10–P90 band (7 days, %) per name and version; nominal 80 % dashed."""
    data = [{"type": "scatter", "mode": "lines", "name": f"{s['name']} {s['version']}", "x": s["t"],
             "y": [None if v is None else round(100 * v, 1) for v in s["coverage"]],
             "line": _line(s, series), "hovertemplate": "%{y:.1f} %"}
            for s in series if any(v is not None for v in s["coverage"])]
    shapes = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 100 * nominal, "y1": 100 * nominal,
               "line": {"color": COLORS["p80"], "width": 1, "dash": "dash"}}]
    layout = _layout(title, "P10–P90 coverage (%)", shapes=shapes)
    layout["yaxis"] |= {"range": [0, 100], "rangemode": "normal"}
    return to_json({"data": data, "layout": layout})
