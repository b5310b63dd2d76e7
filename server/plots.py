"""Charts as plotly.js figures (JSON: `data` + `layout`), drawn in the browser by the plotly.js that the `plotly`
wheel carries (served from the installed package, `PLOTLY_JS`; never a CDN: the server may have no internet).

Why plotly: a kept charting library installable with pip (npm is not reachable here), with axes, units, hover
values and zoom out of the box; the server only builds JSON (plotly's Python package is not imported per request).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from shared.schema import SLOT_NS
from shared.series import iso

KWH_SLOT = "kWh per 15 min"
COLORS = {"actual": "#888888", "forecast": "#1f6feb", "p80": "#b35900"}
NAME_COLORS = {"cnn-1": "#1f6feb", "lstm-1": "#8250df", "cnn-96": "#1a7f37", "lstm-96": "#bf8700"}
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


@lru_cache(maxsize=1)
def plotly_js() -> tuple[str, bytes, bytes]:
    """(version, plotly.min.js, its gzip) from the installed `plotly` package, read once per process."""
    import importlib.metadata

    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    body = path.read_bytes()
    return importlib.metadata.version("plotly"), body, gzip.compress(body, 6)


def _layout(title: str, y_title: str, **extra) -> dict:
    return {"title": {"text": title, "font": {"size": 13}}, "height": 320,
            "margin": {"l": 60, "r": 16, "t": 36, "b": 100}, "hovermode": "x unified",
            "xaxis": {"title": {"text": "time (UTC)"}, "type": "date"},
            "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
            "legend": {"orientation": "h", "y": -0.3, "yanchor": "top"}, **extra}


def _clean(values) -> list[float | None]:
    """JSON numbers, with gaps (NaN) as null: plotly breaks the line there."""
    return [round(float(v), 4) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def to_json(fig: dict) -> str:
    return json.dumps(fig, separators=(",", ":"), allow_nan=False)


def forecast_vs_actual(first_slot_end_ns: int, actual: np.ndarray, forecast: np.ndarray, title: str) -> str:
    """Forecast and actual consumption per slot (x: slot end, UTC), as a figure's JSON."""
    times = [iso(first_slot_end_ns + i * SLOT_NS) for i in range(len(actual))]
    hover = "%{y:.3f} kWh"
    data = [{"type": "scatter", "mode": "lines", "name": "actual", "x": times, "y": _clean(actual),
             "line": {"color": COLORS["actual"], "width": 1.2}, "hovertemplate": hover},
            {"type": "scatter", "mode": "lines", "name": "forecast", "x": times, "y": _clean(forecast),
             "line": {"color": COLORS["forecast"], "width": 1.5}, "hovertemplate": hover}]
    return to_json({"data": data, "layout": _layout(title, KWH_SLOT)})


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
