"""Synthetic houses derived from the real year (data/seed_house): many different-looking houses for the fleet tests
and benchmarks, deterministic for a given seed.

House k of seed s (numpy default_rng(s + k)) takes the real house's 15-minute consumption:
- **time-shifted**: it starts at its own day of the real year (`offset_days`, wrapping around) and is moved in time so
  that its last slot ends at the requested `end` (e.g. now), keeping the time of day;
- **scaled**: every slot × `scale` (0.6 – 1.8), times a per-slot lognormal noise (σ 0.05);
- **with its own gaps**: the real data's own gaps (and its meter replacement) stay where they fall, plus `gaps`
  outages of 2 – 36 h of its own, during which the meter reports nothing.
It is written as what a meter reports: a cumulative counter in kWh (starting at `start_kwh`) at each slot end,
as `time,value` CSV or as InfluxDB points (EnergyMeter, device_id=meter-1, EnergyIn).

    python -m tools.houses --houses 3 --days 60 --out DIR      # DIR/house-1.csv …, and the parameters as JSON
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np

from shared.points import Point
from shared.schema import SLOT_NS, SLOTS_PER_DAY
from shared.series import SlotSeries, counter_to_slots, read_csv

ROOT = Path(__file__).resolve().parents[1]
SEED_CSV = ROOT / "data" / "seed_house" / "raw_data.csv"


@dataclass(frozen=True)
class House:
    name: str
    offset_days: int
    scale: float
    gaps: int
    start_kwh: float
    seed: int


@cache
def real_slots() -> SlotSeries:
    """The real year as kWh per slot (NaN where the real meter has a gap or was replaced)."""
    return counter_to_slots(read_csv(SEED_CSV))


def houses(n: int, seed: int = 0, prefix: str = "house") -> list[House]:
    """`n` houses' parameters; the same (n, seed) always gives the same houses, and house k is the same for any
    n > k."""
    out = []
    for k in range(n):
        rng = np.random.default_rng(seed + k)
        out.append(House(name=f"{prefix}-{k + 1}", offset_days=int(rng.integers(0, 365)),
                         scale=round(float(rng.uniform(0.6, 1.8)), 3), gaps=int(rng.integers(1, 4)),
                         start_kwh=round(float(rng.uniform(1_000, 40_000)), 1), seed=seed + k))
    return out


def slots(house: House, days: int) -> np.ndarray:
    """The house's kWh per slot for `days` days (NaN: no reading for that slot)."""
    real = real_slots().values
    n = days * SLOTS_PER_DAY
    start = (house.offset_days * SLOTS_PER_DAY) % len(real)
    idx = (start + np.arange(n)) % len(real)
    rng = np.random.default_rng(house.seed)
    values = real[idx] * house.scale * rng.lognormal(0.0, 0.05, n)
    for _ in range(house.gaps):
        length = int(rng.integers(8, 36 * 4 + 1))
        at = int(rng.integers(0, max(1, n - length)))
        values[at:at + length] = np.nan
    return values


def readings(house: House, end: datetime, days: int) -> list[tuple[int, float]]:
    """(time ns, counter kWh) at slot ends, the last slot ending at `end` (rounded down to a slot end); no reading
    where the house has a gap (the last readings too, when a gap falls there). The house consumes during a gap too (its median slot), so the counter keeps rising."""
    values = slots(house, days)
    last = int(end.timestamp() * 1e9) // SLOT_NS * SLOT_NS
    first = last - (len(values) - 1) * SLOT_NS
    counter = house.start_kwh + np.cumsum(np.where(np.isfinite(values), values, np.nanmedian(values)))
    known = np.isfinite(values)
    known[0] = True  # the first reading anchors the counter
    return [(first + i * SLOT_NS, round(float(counter[i]), 4)) for i in np.flatnonzero(known)]


def write_csv(rows: list[tuple[int, float]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "value"])
        for t, v in rows:
            w.writerow([datetime.fromtimestamp(t / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), v])
    return path


def points(rows: list[tuple[int, float]], measurement: str = "EnergyMeter", field: str = "EnergyIn",
           device_id: str = "meter-1") -> list[Point]:
    return [Point(measurement, {"device_id": device_id}, {field: v}, t) for t, v in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.houses", description=__doc__.split("\n\n")[0])
    ap.add_argument("--houses", type=int, default=3)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--end", help="ISO time of the last slot (default: now)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    end = datetime.fromisoformat(args.end.replace("Z", "+00:00")) if args.end else datetime.now(UTC)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for h in houses(args.houses, args.seed):
        write_csv(readings(h, end, args.days), out / f"{h.name}.csv")
        made.append(asdict(h))
    (out / "houses.json").write_text(json.dumps(made, indent=2) + "\n")
    print(json.dumps({"houses": made, "end": end.isoformat(), "days": args.days}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
