"""Running kWh totals for Home Assistant (the Energy dashboard's meters): the sums of the `energy_flow` slots.

Every computation of a slot adds what changed since the slot was last counted (new − counted), so a slot that
late readings correct — even days later, long after the look-back window — corrects the totals too (issue 25:
counting each slot once, when it left the look-back, lost PV 5.3 of 21.1 kWh after a device was silent for longer
than the look-back, although energy_flow was right). Roles are counted as soon as they are known: a slot missing
its PV reading counts its grid import now and its PV (and house) when the reading arrives.

What was counted for the recent slots is kept in the file with the totals (`counted`), so a crash between writing a
slot and saving the totals neither loses nor doubles its correction; for older slots the value in the database
is what was counted.

Home Assistant's `total_increasing` reads any decrease as a meter reset and would count the whole total again.
A correction can lower a slot (a split found to be invented, a counter found reset), so the published value of
each total is the highest the true sum has reached: it holds until the true sum passes it again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edge_agent.runtime.durable import replace_file
from shared.schema import ROLE_FIELDS

log = logging.getLogger(__name__)

TOTALS = (*ROLE_FIELDS, "house", "self_supplied")  # energy_flow fields with a running total (kWh)
FORMAT = 2  # 1: {"until", "totals"} (each slot counted once, never revisited)


class RunningTotals:
    """The totals, what each recent slot contributed, and the published (never decreasing) values."""

    def __init__(self, path: Path):
        self.path = path
        self.until: int | None = None  # the newest slot end ever counted
        self.totals: dict[str, float] = dict.fromkeys(TOTALS, 0.0)  # Σ of the slots as they are now
        self.published: dict[str, float] = dict.fromkeys(TOTALS, 0.0)  # max over time of `totals`
        self.counted: dict[int, dict[str, float]] = {}  # slot end → the values counted for it (recent slots)
        self._load()

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("flow: %s unreadable (%s): the totals start again at 0", self.path, exc)
            return
        try:
            until = doc.get("until")
            totals = {k: float(doc["totals"].get(k, 0.0)) for k in TOTALS}
            published = {k: float((doc.get("published") or doc["totals"]).get(k, 0.0)) for k in TOTALS}
            counted = {int(t): {k: float(v) for k, v in values.items() if k in TOTALS}
                       for t, values in (doc.get("counted") or {}).items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("flow: %s has no usable totals (%s): they start again at 0", self.path, exc)
            return
        self.until = until if isinstance(until, int) else None
        self.totals, self.published, self.counted = totals, published, counted

    def count(self, new: dict[int, dict[str, float]], old: dict[int, dict[str, float]] | None) -> bool:
        """Slots just (re)computed: `new` = slot end → the fields known now (a slot with no data left: {});
        `old` = what the database held for them before the rewrite (None: could not be read, e.g. InfluxDB 2.x:
        then a slot older than `counted` keeps what was counted for it). True if anything changed."""
        changed = False
        for t in sorted(new):
            values = {k: v for k, v in new[t].items() if k in TOTALS}
            if t in self.counted:
                before = self.counted[t]
            elif self.until is not None and t <= self.until:  # counted earlier, its values are in the database
                before = values if old is None else {k: v for k, v in old.get(t, {}).items() if k in TOTALS}
            else:
                before = {}  # never counted
            for k in TOTALS:
                self.totals[k] += values.get(k, 0.0) - before.get(k, 0.0)
            changed |= self.counted.get(t) != values
            self.counted[t] = values
            self.until = t if self.until is None else max(self.until, t)
        for k in TOTALS:
            self.published[k] = max(self.published[k], self.totals[k])
        return changed

    def forget_before(self, t_ns: int) -> None:
        """Keep `counted` small: older slots are counted by their values in the database."""
        for t in [t for t in self.counted if t < t_ns]:
            del self.counted[t]

    def payload(self) -> dict:
        """What `<prefix>/flow/totals` carries (kWh, never decreasing)."""
        return {f"{k}_kwh": round(v, 4) for k, v in self.published.items()}

    def save(self) -> None:
        """The one place the totals file is written: durable before anything is published from it (a power cut
        must not revert totals Home Assistant has seen, nor leave an empty file), replaced all or nothing."""
        doc = {"format": FORMAT, "until": self.until, "totals": self.totals, "published": self.published,
               "counted": {str(t): v for t, v in sorted(self.counted.items())}}
        replace_file(self.path, json.dumps(doc).encode())
