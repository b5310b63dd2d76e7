"""The house's power now, for Home Assistant: the newest power reading of each flow device with a `power_field`.

Read from the line protocol of every batch ingest stored (the flow already looks at those lines for late data), so
it costs no query. Per role the devices' newest readings add up (W; grid + import / − export, battery + charge /
− discharge, PV +); the house is grid + PV − battery when every role has one. Published on `<prefix>/flow/power` at
most every `power_interval_s`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.points import _escape_key, escape_measurement
from shared.series import iso

STALE_NS = 300 * 10**9  # a reading older than the newest one by this much no longer counts as "now"


def _split(data: bytes, sep: int) -> list[bytes]:
    """Split line-protocol bytes on `sep` outside backslash escapes and double-quoted strings."""
    out, start, i, quoted = [], 0, 0, False
    while i < len(data):
        c = data[i]
        if c == 0x5C:  # backslash: the next byte is literal
            i += 2
            continue
        if c == 0x22:
            quoted = not quoted
        elif c == sep and not quoted:
            out.append(data[start:i])
            start = i + 1
        i += 1
    out.append(data[start:])
    return out


@dataclass
class _Matcher:
    role: str
    index: int  # the device's position in [flow].devices
    measurement: bytes
    tags: frozenset[bytes]  # `key=value` tokens the series must carry
    field: bytes


class PowerNow:
    def __init__(self, devices: list, interval_s: float):
        """`devices`: the flow's devices; those with a `power_field` (and a role) are followed."""
        self.matchers = [
            _Matcher(d.role, i, escape_measurement(d.measurement).encode(),
                     frozenset(f"{_escape_key(k)}={_escape_key(v)}".encode() for k, v in d.tags.items()),
                     _escape_key(d.power_field).encode() + b"=")
            for i, d in enumerate(devices) if d.power_field and d.role in ("grid", "pv", "battery")]
        self.roles = {m.role for m in self.matchers}
        configured = {d.role for d in devices} & {"grid", "pv", "battery"}
        self.house = bool(self.roles) and configured <= self.roles  # every role's power is known: the house's too
        self.interval_s = interval_s
        self._latest: dict[int, tuple[int, float]] = {}  # device index → (time ns, W)
        self._published = 0.0

    def update(self, lines: list[bytes]) -> bool:
        """Take the power readings among stored lines; True when it is time to publish."""
        if not self.matchers:
            return False
        changed = False
        for line in lines:
            for m in self.matchers:
                if not (line.startswith(m.measurement) and line[len(m.measurement):len(m.measurement) + 1] in b", "):
                    continue
                parts = _split(line.rstrip(b"\n"), 0x20)
                if len(parts) < 3 or not m.tags <= set(_split(parts[0], 0x2C)[1:]):
                    continue
                value = next((f[len(m.field):] for f in _split(parts[1], 0x2C) if f.startswith(m.field)), None)
                try:
                    t, w = int(parts[2]), float(value.rstrip(b"iu")) if value else None
                except ValueError:
                    continue
                if w is not None and t >= self._latest.get(m.index, (0, 0.0))[0]:
                    self._latest[m.index] = (t, w)
                    changed = True
        now = time.monotonic()
        if changed and now - self._published >= self.interval_s:
            self._published = now
            return True
        return False

    def payload(self) -> dict:
        """`{"time", "grid_w", "pv_w", "battery_w", "house_w"}` (null where unknown)."""
        newest = max((t for t, _ in self._latest.values()), default=0)
        doc: dict = {"time": iso(newest) if newest else None}
        for role in ("grid", "pv", "battery"):
            ms = [m for m in self.matchers if m.role == role]
            vals = [self._latest.get(m.index) for m in ms]
            ok = ms and all(v is not None and newest - v[0] <= STALE_NS for v in vals)
            doc[f"{role}_w"] = round(sum(v[1] for v in vals), 1) if ok else None
        known = [doc[f"{r}_w"] for r in self.roles]
        doc["house_w"] = (round((doc["grid_w"] or 0) + (doc["pv_w"] or 0) - (doc["battery_w"] or 0), 1)
                          if self.house and all(v is not None for v in known) else None)
        return doc

    def sensor_roles(self) -> set[str]:
        """The roles Home Assistant gets a power sensor for (`house` when every role's power is known)."""
        return self.roles | ({"house"} if self.house else set())
