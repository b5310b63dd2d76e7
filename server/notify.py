"""Alerts for the houses: the overview's warnings, and notifications through apprise (ntfy, e-mail, Telegram,
webhooks `json://…`, any of its 100+ services) when a house stops reporting or forecasting.

What counts (`house_alerts`, also shown on the overview):
- `not_reporting`: the agent has not answered the status poll for `[notify] stale_after_s` (30 min);
- `not_forecasting`: its newest forecast is older than `forecast_after_s` (2 h);
- `backup_stale`: its last good backup is older than `backup_after_s` (2 days);
- the agent's own problems (its `problem` sensor: ingest stalled, disk filling, …), when `agent_problems`.
The job worker evaluates every house after each status poll (`Notifier.run`); each alert is one row in SQLite
while it lasts, so a person is told once when it starts and once when it is over (`resolved`), not every minute,
and a restarted server does not repeat itself. A notification that fails is retried at the next evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

from server.config import NotifyConfig
from server.db import Database

log = logging.getLogger(__name__)


def _age_s(iso: str | None, now: float) -> float | None:
    if not iso:
        return None
    try:
        return now - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def house_alerts(node: dict, cfg: NotifyConfig, now: float) -> dict[str, str]:
    """code → message for one house (a row of db.overview(), status decoded or not)."""
    status = node.get("status")
    status = json.loads(status) if isinstance(status, str) else (status or {})
    out: dict[str, str] = {}
    seen = node.get("reachable_at") or None
    silent = now - (seen or node.get("created") or now)
    if not status.get("reachable") and silent > cfg.stale_after_s:
        out["not_reporting"] = (f"has not answered for {silent / 60:.0f} min" if seen else
                                f"has never answered ({silent / 60:.0f} min since it was registered)")
    if status.get("reachable"):
        age = _age_s(status.get("last_forecast"), now)
        if age is not None and age > cfg.forecast_after_s:
            out["not_forecasting"] = f"newest forecast is {age / 3600:.1f} h old"
        backup = status.get("backup") or {}
        if backup.get("age_s") is not None and backup["age_s"] > cfg.backup_after_s:
            out["backup_stale"] = f"last good backup is {backup['age_s'] / 86400:.1f} days old"
        if cfg.agent_problems:
            for p in status.get("problems") or []:
                out.setdefault(p["code"], p["message"])
    return out


class Notifier:
    def __init__(self, cfg: NotifyConfig, db: Database):
        self.cfg, self.db = cfg, db
        self._apprise = None

    def _send(self, title: str, body: str) -> bool:
        if not self.cfg.urls:
            return True  # nobody to tell: the overview shows it
        if self._apprise is None:
            import apprise

            self._apprise = apprise.Apprise()
            for url in self.cfg.urls:
                if not self._apprise.add(url):
                    log.warning("notify: an apprise URL was not understood (%s…)", url.split("://")[0])
        ok = bool(self._apprise.notify(title=title, body=body))
        if not ok:
            log.warning("notify: sending %r failed (retried at the next evaluation)", title)
        return ok

    def run(self, now: float | None = None) -> list[tuple[str, str]]:
        """Evaluate every house; send what started and what is over. Returns (title, body) of what was sent."""
        now = now or time.time()
        sent = []
        open_alerts = {(a["node_id"], a["code"]): a for a in self.db.alerts()}
        for node in self.db.overview():
            current = house_alerts(node, self.cfg, now)
            for code, message in current.items():
                row = open_alerts.pop((node["id"], code), None)
                if row is None:
                    self.db.open_alert(node["id"], code, message, now)
                if row is None or not row["notified"]:
                    title = f"home-energy: {node['name']} {code.replace('_', ' ')}"
                    if self._send(title, f"{node['name']}: {message}"):
                        self.db.alert_notified(node["id"], code, now)
                        sent.append((title, message))
        names = {n["id"]: n["name"] for n in self.db.nodes()}
        for (node_id, code), row in open_alerts.items():  # over (or the house was removed)
            if self.cfg.resolved and row["notified"] and node_id in names:
                title = f"home-energy: {names[node_id]} {code.replace('_', ' ')} resolved"
                if not self._send(title, f"{names[node_id]}: resolved after {(now - row['since']) / 60:.0f} min "
                                         f"({row['message']})"):
                    continue
                sent.append((title, row["message"]))
            self.db.close_alert(node_id, code)
        return sent
