"""Notifications for houses that stop reporting or forecasting, through apprise to a receiver on loopback
(apprise's `json://` webhook), once when a problem starts and once when it is over; the overview says the same."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from server import overview
from server.config import NotifyConfig
from server.db import Database
from server.notify import Notifier


@pytest.fixture
def receiver():
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def test_a_house_that_stops_reporting_and_forecasting_is_notified_once(tmp_path, receiver):
    url, got = receiver
    db = Database(tmp_path / "server.sqlite")
    db.add_node("house-a", "http://127.0.0.1:1", "t" * 20, {}, 0)
    db.add_node("house-b", "http://127.0.0.1:2", "t" * 20, {}, 0)
    a, b = db.node_named("house-a")["id"], db.node_named("house-b")["id"]
    notifier = Notifier(NotifyConfig(urls=[url], stale_after_s=1800, forecast_after_s=7200), db)
    t0 = db.node(a)["created"]

    def status(node_id, reachable, last_forecast=None, problems=(), backup_age=None):
        doc = {"reachable": reachable, "last_forecast": last_forecast, "problems": list(problems)}
        if backup_age is not None:
            doc["backup"] = {"last_ok": "2026-12-01T00:00:00Z", "age_s": backup_age}
        db.set_node_status(node_id, doc)

    fresh = "2099-01-01T00:00:00Z"
    status(a, True, fresh)
    status(b, True, fresh, backup_age=3600)
    assert notifier.run(t0 + 60) == [] and got == []

    # house-a stops answering; 10 minutes is not yet "stopped reporting", 40 are — told once
    status(a, False)
    assert notifier.run(t0 + 600) == []
    sent = notifier.run(t0 + 2400)
    assert [t for t, _ in sent] == ["home-energy: house-a not reporting"]
    assert notifier.run(t0 + 2500) == [] and len(got) == 1
    assert got[0]["title"] == "home-energy: house-a not reporting" and "has not answered" in got[0]["message"]

    # house-b answers but forecasts no more, reports a full disk itself and its backup is old
    status(b, True, "2026-12-01T00:00:00Z", problems=[{"code": "disk_filling", "message": "/var/lib 4% free"}],
           backup_age=3 * 86400)
    titles = sorted(t for t, _ in notifier.run(t0 + 2600))
    assert titles == ["home-energy: house-b backup stale", "home-energy: house-b disk filling",
                      "home-energy: house-b not forecasting"]
    row = next(r for r in overview.rows(db) if r["name"] == "house-b")  # the page says the same
    assert any(p.startswith("not forecasting") for p in row["problems"])
    assert any("disk filling: /var/lib 4% free" in p for p in row["problems"])
    assert any(p.startswith("backup stale: last good backup is 3.0 days old") for p in row["problems"])

    # house-a is back: one "resolved"; nothing more while all is well
    status(a, True, fresh)
    resolved = [t for t, _ in notifier.run(t0 + 2700)]
    assert "home-energy: house-a not reporting resolved" in resolved
    assert {(x["node_id"], x["code"]) for x in db.alerts()} == {(b, "backup_stale"), (b, "disk_filling"),
                                                               (b, "not_forecasting")}
    assert len(got) == 5 and "resolved after 5 min" in got[-1]["message"]


def test_a_failed_delivery_is_retried(tmp_path):
    db = Database(tmp_path / "server.sqlite")
    db.add_node("house", "http://127.0.0.1:1", "t" * 20, {}, 0)
    node = db.node_named("house")["id"]
    db.set_node_status(node, {"reachable": True, "last_forecast": "2020-01-01T00:00:00Z"})
    notifier = Notifier(NotifyConfig(urls=["json://127.0.0.1:9/nothing-listens"]), db)
    assert notifier.run() == []  # the receiver is away: not marked as told
    assert db.alerts(node)[0]["notified"] is None
