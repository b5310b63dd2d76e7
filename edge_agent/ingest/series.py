"""A bound on the series each rule may create (issue 23: 10,000 device topics silently made 10,001 series).

A series is a measurement with its tag set. InfluxDB keeps an index entry per series for ever, in memory and on
disk, and a topic level or a payload key that turns into a tag can create them without end: a misconfigured
device, a serial number in a topic, or an attacker. Beyond `ingest.max_series_per_rule` new series of a rule are
refused (the message is dead-lettered as `too_many_series`; points of series already known are stored), counted,
and logged. The known series survive restarts in `<state_dir>/series.json` (written at most every
`SAVE_INTERVAL_S` when new ones came, and at stop: a power cut can forget the last minute's new series, which
are then counted again).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from edge_agent.runtime.durable import replace_file

log = logging.getLogger(__name__)

SAVE_INTERVAL_S = 60.0


class SeriesLimit:
    """The series known per rule, and whether a new one may be added."""

    def __init__(self, max_per_rule: int, path: Path | None = None):
        self.max_per_rule = max_per_rule
        self.path = path
        self._known: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._saved_at = 0.0
        self._warned: set[str] = set()
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            self._known = {str(rule): set(map(str, keys)) for rule, keys in doc.get("rules", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("cannot read the known series from %s (%s): counting them again", path, exc)
            self._known = {}

    def admit(self, rule: str, key: str) -> bool:
        """True if `key` is a known series of `rule` or may become one."""
        if self.max_per_rule <= 0:
            return True
        known = self._known.get(rule)
        if known is not None and key in known:
            return True
        with self._lock:
            known = self._known.setdefault(rule, set())
            if len(known) >= self.max_per_rule:
                if rule not in self._warned:
                    self._warned.add(rule)
                    log.warning("rule %r reached ingest.max_series_per_rule = %d series: new series are "
                                "dead-lettered (too_many_series); is a changing value (a serial number, a time) "
                                "used as a tag?", rule, self.max_per_rule)
                return False
            known.add(key)
            self._dirty = True
            return True

    @property
    def count(self) -> int:
        return sum(len(k) for k in self._known.values())

    def save(self, force: bool = False) -> None:
        """Write the known series if new ones came (at most every SAVE_INTERVAL_S unless `force`)."""
        if self.path is None or not self._dirty or (not force and time.monotonic() - self._saved_at
                                                      < SAVE_INTERVAL_S):
            return
        with self._lock:
            doc = {"max_per_rule": self.max_per_rule,
                   "rules": {rule: sorted(keys) for rule, keys in self._known.items()}}
            self._dirty = False
        self._saved_at = time.monotonic()
        try:
            replace_file(self.path, json.dumps(doc).encode())
        except OSError as exc:  # a full disk: keep counting in memory, try again later
            self._dirty = True
            log.warning("cannot save the known series to %s: %s", self.path, exc)
