"""Small inline SVG plots (no plotting library): forecast vs actual."""

from __future__ import annotations

from html import escape

import numpy as np


def forecast_vs_actual_svg(actual: np.ndarray, forecast: np.ndarray, title: str, width: int = 560,
                           height: int = 180) -> str:
    """Two polylines (actual grey, forecast blue) over the same slots; NaN breaks the actual line."""
    n = len(actual)
    top = float(np.nanmax(np.concatenate([actual, forecast]))) if n else 1.0
    top = top if np.isfinite(top) and top > 0 else 1.0
    pad = 24

    def pts(values: np.ndarray) -> list[str]:
        segs, cur = [], []
        for i, v in enumerate(values):
            if not np.isfinite(v):
                if cur:
                    segs.append(" ".join(cur))
                cur = []
                continue
            x = pad + (width - 2 * pad) * i / max(n - 1, 1)
            y = height - pad - (height - 2 * pad) * v / top
            cur.append(f"{x:.1f},{y:.1f}")
        if cur:
            segs.append(" ".join(cur))
        return segs

    lines = [f'<polyline fill="none" stroke="#999" stroke-width="1.2" points="{p}"/>' for p in pts(actual)]
    lines += [f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.4" points="{p}"/>' for p in pts(forecast)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
            f'<text x="{pad}" y="14" font-size="11">{escape(title)} — actual (grey), forecast (blue), '
            f'max {top:.2f} kWh</text>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#ccc"/>'
            + "".join(lines) + "</svg>")
