"""What converted messages held that was not stored, without being an error: counted and logged, never lost
without a word (issue 23).

- `ignored`: normal messages a rule takes that carry nothing to store (a Shelly NotifyEvent, a status change
  without numbers). Counter `ignored`; not dead-lettered, because nothing is wrong with them.
- `numeric_text_skipped`: numbers sent as text in a message whose other values were stored, which its rule does
  not take (`numeric_strings` is off), e.g. Teleinfo's `"BASE":"007970903"` through Tasmota. Counted per value
  and logged once per rule and path with the key to set, so the user gets a hint instead of a missing counter.
"""

from __future__ import annotations

import logging

from edge_agent.runtime.health import Health

log = logging.getLogger(__name__)

MAX_WARNED = 1000  # (rule, path) pairs remembered for logging once; hostile payloads cannot grow it further


class Notes:
    def __init__(self, health: Health):
        self.health = health
        self._warned: set[tuple[str | None, str]] = set()

    def record(self, ignored: list[dict], skipped: list[dict]) -> None:
        if ignored:
            self.health.incr("ignored", len(ignored))
        for entry in skipped:
            self.health.incr("numeric_text_skipped", len(entry["skipped"]))
            for path, text in entry["skipped"]:
                key = (entry["rule"], path)
                if key in self._warned or len(self._warned) >= MAX_WARNED:
                    continue
                self._warned.add(key)
                log.warning("%s: %s is a number sent as text (%r) and is not stored: set numeric_strings = true "
                            "in rule %r to store it (counter numeric_text_skipped; logged once)", entry["topic"],
                            path, text, entry["rule"])
