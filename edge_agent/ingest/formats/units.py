"""Unit conversions a rule may apply to a field (`convert`, `scale`): devices count energy in Wh, kWh or even
watt-minutes (Shelly gen1), the energy flow and the forecast work in kWh.

Conversions are exact in decimal (issue 23): a device's reading is the decimal it sends (`131881.85` Wh), and the
stored value is the double nearest to that decimal times the exact factor (131.88185 kWh, where a float multiply
gives 131.88185000000001; 7 × 0.1 gives 0.7, not 0.7000000000000001). Meter readings then compare equal with
what the device shows, and sums of kWh do not drift in the last digit. A factor is the rational number it
means: `0.1` is 1/10, `"Wmin->kWh"` 1/60000. Scaling a value is one of three exact roundings, picked when the
configuration is loaded (`scaler`): a power of ten shifts the decimal exponent (string → float, ~0.5 µs), another
terminating decimal multiplies in `decimal`, anything else (1/60, 1/3600) in `fractions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Context, Decimal
from fractions import Fraction

_F = Fraction
# unit -> (dimension, exact factor to the dimension's base unit)
UNITS: dict[str, tuple[str, Fraction]] = {
    "Ws": ("energy", _F(1, 3600)), "J": ("energy", _F(1, 3600)), "kJ": ("energy", _F(1000, 3600)),
    "Wmin": ("energy", _F(1, 60)), "mWh": ("energy", _F(1, 1000)), "Wh": ("energy", _F(1)),
    "kWh": ("energy", _F(1000)), "MWh": ("energy", _F(10**6)), "mW": ("power", _F(1, 1000)), "W": ("power", _F(1)),
    "kW": ("power", _F(1000)), "MW": ("power", _F(10**6)), "VA": ("apparent", _F(1)), "kVA": ("apparent", _F(1000)),
    "var": ("reactive", _F(1)), "kvar": ("reactive", _F(1000)), "mA": ("current", _F(1, 1000)),
    "A": ("current", _F(1)), "mV": ("voltage", _F(1, 1000)), "V": ("voltage", _F(1)), "kV": ("voltage", _F(1000)),
}


def decimal_fraction(value: int | float) -> Fraction:
    """The rational number a configured number means: 0.1 is 1/10 (the decimal written), not the binary double."""
    return Fraction(value) if isinstance(value, int) else Fraction(repr(float(value)))


def exact_factor(spec: object, key: str) -> Fraction:
    """The exact factor for `"Wh->kWh"` (units of one dimension) or a plain number; raises ValueError naming
    `key`."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        if not math.isfinite(spec) or spec == 0:
            raise ValueError(f"{key}: a factor must be a finite non-zero number, got {spec!r}")
        return decimal_fraction(spec)
    if not isinstance(spec, str) or "->" not in spec:
        raise ValueError(f"{key}: expected 'FROM->TO' (e.g. 'Wh->kWh') or a number, got {spec!r}")
    src, dst = (s.strip() for s in spec.split("->", 1))
    for unit in (src, dst):
        if unit not in UNITS:
            raise ValueError(f"{key}: unknown unit {unit!r}; known: {', '.join(UNITS)}")
    if UNITS[src][0] != UNITS[dst][0]:
        raise ValueError(f"{key}: cannot convert {UNITS[src][0]} ({src}) to {UNITS[dst][0]} ({dst})")
    return UNITS[src][1] / UNITS[dst][1]


def conversion_factor(spec: object, key: str) -> float:
    """The factor as a float (for display); `exact_factor` is what conversions use."""
    return float(exact_factor(spec, key))


def _power_of_ten(n: int) -> int | None:
    """k with n == 10**k (n >= 1), else None."""
    k = 0
    while n % 10 == 0:
        n //= 10
        k += 1
    return k if n == 1 else None


def _only_2_and_5(n: int) -> bool:
    for p in (2, 5):
        while n % p == 0:
            n //= p
    return n == 1


Scaler = Callable[[float], float]


def scaler(factor: Fraction) -> Scaler | None:
    """A function x -> the double nearest to decimal(x) × factor, where decimal(x) is the shortest decimal that
    reads back as x (what the device sent: `repr`). None for the factor 1 (nothing to do). Overflow gives ±inf
    (the point is then refused as `invalid_value`, as before)."""
    if factor == 1:
        return None
    num, den = factor.numerator, factor.denominator
    k = _power_of_ten(den) if abs(num) == 1 else None
    if k is not None:  # 1/10**k, the usual case (Wh->kWh, 0.1, 0.001)
        return _shift(-k, num < 0)
    k = _power_of_ten(abs(num)) if den == 1 else None
    if k is not None:  # 10**k (kWh->Wh, kW->W)
        return _shift(k, num < 0)
    if _only_2_and_5(den):  # a terminating decimal (0.5, 2.5, 0.0036): exact in decimal with enough digits
        d = Context(prec=400).divide(Decimal(num), Decimal(den))  # exact: den has only the factors 2 and 5
        digits = len(d.as_tuple().digits)
        ctx = Context(prec=digits + 20, Emax=10**6, Emin=-(10**6))

        def multiply(x: float) -> float:
            if x - x != 0.0:  # inf, nan: nothing decimal about them
                return x * float(factor)
            return float(ctx.multiply(Decimal(repr(x)), d))
        return multiply

    def rational(x: float) -> float:  # 1/60, 1/3600, 5/18: no finite decimal; the exact product, rounded once
        if x - x != 0.0:
            return x * float(factor)
        try:
            return float(Fraction(repr(x)) * factor)
        except OverflowError:
            return math.copysign(math.inf, x) * (1 if factor > 0 else -1)
    return rational


def _shift(k: int, negate: bool) -> Scaler:
    """x × 10**k by moving the decimal exponent of x's shortest representation (one correctly rounded parse)."""
    def shift(x: float) -> float:
        if x - x != 0.0:  # inf, nan
            return -x if negate else x
        s = repr(-x if negate else x)
        if "e" in s:
            mantissa, exp = s.split("e")
            return float(f"{mantissa}e{int(exp) + k}")
        return float(f"{s}e{k}")
    return shift
