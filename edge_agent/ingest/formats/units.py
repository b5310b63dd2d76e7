"""Unit conversions a rule may apply to a field (`convert`): devices count energy in Wh, kWh or even watt-minutes
(Shelly gen1), the energy flow and the forecast work in kWh."""

from __future__ import annotations

import math

# unit -> (dimension, factor to the dimension's base unit)
UNITS: dict[str, tuple[str, float]] = {
    "Ws": ("energy", 1 / 3600), "J": ("energy", 1 / 3600), "kJ": ("energy", 1000 / 3600),
    "Wmin": ("energy", 1 / 60), "mWh": ("energy", 1e-3), "Wh": ("energy", 1.0), "kWh": ("energy", 1e3),
    "MWh": ("energy", 1e6), "mW": ("power", 1e-3), "W": ("power", 1.0), "kW": ("power", 1e3), "MW": ("power", 1e6),
    "VA": ("apparent", 1.0), "kVA": ("apparent", 1e3), "var": ("reactive", 1.0), "kvar": ("reactive", 1e3),
    "mA": ("current", 1e-3), "A": ("current", 1.0), "mV": ("voltage", 1e-3), "V": ("voltage", 1.0),
    "kV": ("voltage", 1e3),
}


def conversion_factor(spec: object, key: str) -> float:
    """The factor for `"Wh->kWh"` (units of one dimension) or a plain number; raises ValueError naming `key`."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        if not math.isfinite(spec) or spec == 0:
            raise ValueError(f"{key}: a factor must be a finite non-zero number, got {spec!r}")
        return float(spec)
    if not isinstance(spec, str) or "->" not in spec:
        raise ValueError(f"{key}: expected 'FROM->TO' (e.g. 'Wh->kWh') or a number, got {spec!r}")
    src, dst = (s.strip() for s in spec.split("->", 1))
    for unit in (src, dst):
        if unit not in UNITS:
            raise ValueError(f"{key}: unknown unit {unit!r}; known: {', '.join(UNITS)}")
    if UNITS[src][0] != UNITS[dst][0]:
        raise ValueError(f"{key}: cannot convert {UNITS[src][0]} ({src}) to {UNITS[dst][0]} ({dst})")
    return UNITS[src][1] / UNITS[dst][1]
