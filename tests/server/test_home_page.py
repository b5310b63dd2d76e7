"""The homeowner's view on a house's page and the verdicts in words — in a real headless Chromium against real
gunicorn, the house's data in a real influxd: today's energy and the last 7 local days (a PV + battery house in
Europe/Berlin, hand-made slots whose sums the test computes itself), the next 24 h with the P10–P90 band, what was
said a day ahead and the actual; times in the house's zone; the versions' verdicts, the learning line, a push the
gate held back in one line with its details folded, no Roll back for a model without a previous version.
Screenshots (DOCS_SCREENSHOTS=1 copies them to docs/img/)."""

from __future__ import annotations

import math
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from server import home, nodes
from shared.points import Point
from shared.schema import BUNDLE_NAMES, SLOT_NS
from shared.storage import StorageConfig, open_storage
from shared.verdict import baseline_words
from tests.helpers.server import PASSWORD, start_gunicorn

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Europe/Berlin")
DAY = 96 * SLOT_NS


def _now() -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=now.minute % 15)


def pv_house(url: str, db: str, now: datetime, days: int = 9) -> dict[int, dict[str, float]]:
    """energy_flow slots of a house with PV and a battery (flows that balance), and its forecasts: the newest
    cycle's next 24 h (cnn-96, with a band) and a day-ahead issue from yesterday's local midnight. Returns the
    slots by end time."""
    now_ns = int(now.timestamp() * 1e9)
    rng = np.random.default_rng(7)
    content, slots, pts = 2.0, {}, []
    for t in range(now_ns - days * DAY + SLOT_NS, now_ns + 1, SLOT_NS):
        local = datetime.fromtimestamp(t / 1e9, UTC).astimezone(TZ)
        hour = local.hour + local.minute / 60
        house = 0.08 + 0.25 * math.exp(-((hour - 19.5) / 1.5) ** 2) + 0.12 * math.exp(-((hour - 7.5) / 1) ** 2) \
            + float(rng.uniform(0, 0.05))
        pv = max(0.0, math.sin((hour - 8) / 8 * math.pi)) * 0.45 if 8 <= hour <= 16 else 0.0
        f = dict.fromkeys(("grid_import", "grid_export", "battery_charge", "battery_discharge"), 0.0)
        if pv >= house:
            f["battery_charge"] = min((pv - house) / 2, 5.0 - content)
            f["grid_export"] = pv - house - f["battery_charge"]
            self_supplied = house
        else:
            f["battery_discharge"] = min(house - pv, content, 0.2)
            f["grid_import"] = house - pv - f["battery_discharge"]
            self_supplied = pv + f["battery_discharge"]
        content += f["battery_charge"] - f["battery_discharge"]
        slot = {"house": house, "pv": pv, **f, "self_supplied": self_supplied, "autarky": self_supplied / house}
        slots[t] = slot
        pts.append(Point("energy_flow", {}, {k: round(v, 6) for k, v in slot.items()} | {"flags": ""}, t))
    tags = {"model": "cnn", "version": "20260301T000000Z", "horizon": "96", "name": "cnn-96"}
    for k in range(1, 97):  # the newest cycle's next 24 h: yesterday's consumption, ±25 %
        t = now_ns + k * SLOT_NS
        v = slots[t - DAY]["house"]
        pts.append(Point("forecast", tags | {"issue": "rolling"}, {"value_kwh": v, "p10_kwh": 0.75 * v,
                                                                   "p90_kwh": 1.25 * v, "shadow": False}, t))
    midnight = datetime.combine(now.astimezone(TZ).date() - timedelta(days=1), datetime.min.time(), TZ)
    issue = int(midnight.timestamp() * 1e9)
    for k in range(1, 97):  # what was said a day ahead, at yesterday's local midnight
        t = issue + k * SLOT_NS
        v = slots[t - DAY]["house"] * 1.05
        pts.append(Point("forecast", tags | {"issue": "day_ahead"}, {"value_kwh": v, "p10_kwh": 0.8 * v,
                                                                     "p90_kwh": 1.3 * v, "shadow": False}, t))
    st = open_storage(StorageConfig(url=url, database=db))
    st.write(pts)
    st.close()
    return slots


def local_day_sums(slots: dict[int, dict[str, float]], day) -> dict[str, float]:
    """The test's own sums for a local day: slots whose last second lies in it."""
    out: dict[str, float] = {}
    for t, s in slots.items():
        if datetime.fromtimestamp(t / 1e9 - 1, UTC).astimezone(TZ).date() == day:
            for k, v in s.items():
                out[k] = out.get(k, 0.0) + v
    return out


def test_energy_sums_local_days_and_the_slot_ending_at_midnight_belongs_to_the_day_before(influxd_session,
                                                                                          influx_db_name):
    now = _now()
    slots = pv_house(influxd_session.url, influx_db_name, now)
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    got = home.energy(st, TZ, now)
    view = home.next_day(st, {}, now, "cnn-96", ("EnergyMeter", "EnergyIn"))
    st.close()
    today = now.astimezone(TZ).date()
    assert [d["date"] for d in got["days"]] == [(today - timedelta(days=k)).isoformat() for k in range(7, 0, -1)]
    for d in [*got["days"], got["today"] | {"date": today.isoformat()}]:
        want = local_day_sums(slots, datetime.fromisoformat(d["date"]).date())
        for k in ("house", "grid_import", "grid_export", "pv", "battery_charge", "battery_discharge"):
            assert d[k] == pytest.approx(want[k], abs=2e-3), (d["date"], k)
        assert d["autarky"] == pytest.approx(want["self_supplied"] / want["house"], abs=2e-3)
    assert got["days"][-1]["slots"] == got["days"][-1]["expected"] == 96
    assert got["has_pv"] and got["has_battery"] and got["has_export"]
    # the slot ending at local midnight counts for the day before
    midnight = int(datetime.combine(today, datetime.min.time(), TZ).timestamp() * 1e9)
    assert home.day_of_slot(midnight, TZ) == today - timedelta(days=1)
    assert home.day_of_slot(midnight + SLOT_NS, TZ) == today
    # the next 24 h: 96 slots with a band; said a day ahead; the actual of the last 24 h
    assert len(view["latest"].t) == 96 and view["latest"].has_band and view["said"].has_band
    assert len(view["actual"]) == 96 and max(view["actual"]) == int(now.timestamp() * 1e9)


@pytest.mark.timeout(400)
def test_the_house_page_shows_the_homeowner_view_and_verdicts_in_chromium(tmp_path, seed_bundles, influxd_session,
                                                                          influx_db_name, artefacts_dir):
    from playwright.sync_api import expect, sync_playwright

    from server.config import load_config
    from server.registry import node_owner
    from server.state import build_state
    from tests.server.test_browser import CHROMIUM, CHROMIUM_ARGS, api
    from training.data import load

    now = _now()
    slots = pv_house(influxd_session.url, influx_db_name, now)
    server = start_gunicorn(tmp_path / "gunicorn", job_worker=False)
    try:
        s = build_state(load_config(server.config))
        base = f"http://localhost:{server.port}"
        node = api(base, "/api/v1/nodes", {"name": "sunny", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
                                           "influx": {"url": influxd_session.url, "database": influx_db_name}})
        series = load([ROOT / "data" / "seed_house" / "raw_data.csv"])
        rows = {r["name"]: r for r in s.registry.add_run([seed_bundles / n for n in BUNDLE_NAMES],
                                                         node_owner(node["id"]), series)}
        v = rows["cnn-1"]["version"]
        entry = lambda r: {"version": r["version"], "sha256": r["sha256"], "activated_at": "2026-03-01T00:00:00Z"}  # noqa: E731
        previous = {"version": "20230101T000000Z", "sha256": "b" * 64, "activated_at": "2026-01-01T00:00:00Z"}
        status = nodes.clean_status({
            "agent_version": "0.9", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"},
            "models": {n: {"active": entry(rows[n]), "previous": previous if n == "cnn-1" else None}
                       for n in BUNDLE_NAMES},
            "last_forecast": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "calendar": {"holidays": None, "timezone": "Europe/Berlin"},
            "guard": {"enabled": True, "models": {
                n: {"version": v, "state": "learning", "slots": 120 if n.endswith("-1") else 200,
                    "min_slots": 300 if n.endswith("-1") else 480, "reason": None} for n in BUNDLE_NAMES},
                "serving": {"96": {"name": "cnn-96", "model": "cnn", "version": v, "fallback_reason": None}}}})
        s.db.set_node_status(node["id"], {"reachable": True, **status})
        held = nodes.gate_window(rows["cnn-96"] | {"data": {"end": now.strftime("%Y-%m-%dT%H:%M:%SZ")}},
                                 rows["cnn-96"], series.until(int(now.timestamp() * 1e9)))[1]
        nodes.held(s.db, s.db.node(node["id"]), rows["cnn-96"], held)  # what a retrain's automatic push records

        shots = artefacts_dir / "home"
        shots.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/nodes/{node['id']}")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login")
            # today's energy so far, and the last 7 local days, as the test sums them itself
            today = local_day_sums(slots, now.astimezone(TZ).date())
            tiles = page.locator("#today")
            expect(tiles.locator("[data-field=house]")).to_have_text(f"{today['house']:.1f} kWh", timeout=30_000)
            expect(tiles.locator("[data-field=pv]")).to_have_text(f"{today['pv']:.1f} kWh")
            expect(tiles.locator("[data-field=grid_export]")).to_have_text(f"{today['grid_export']:.1f} kWh")
            expect(tiles.locator("[data-field=autarky]")).to_have_text(
                f"{100 * today['self_supplied'] / today['house']:.0f} %")
            next_24h = sum(slots[t - DAY]["house"] for t in range(int(now.timestamp() * 1e9) + SLOT_NS,
                                                                   int(now.timestamp() * 1e9) + DAY + 1, SLOT_NS))
            expect(tiles.locator("[data-field=next_24h]")).to_have_text(f"{next_24h:.1f} kWh")
            days = page.locator("#last-days tr[data-date]")
            expect(days).to_have_count(7)
            yesterday = now.astimezone(TZ).date() - timedelta(days=1)
            want = local_day_sums(slots, yesterday)
            row = page.locator(f"#last-days tr[data-date='{yesterday.isoformat()}']")
            expect(row).to_contain_text(f"{want['house']:.1f}")
            expect(row).to_contain_text(f"{100 * want['self_supplied'] / want['house']:.0f} %")
            expect(row).to_contain_text("96 of 96")
            # both charts, in the house's zone: the forecast with its band, what was said a day ahead, the actual
            expect(page.locator("#home-charts .chart[data-drawn]")).to_have_count(2, timeout=30_000)
            fc = page.locator("#home-charts .chart[data-key=forecast]")
            expect(fc.locator(".g-xtitle")).to_have_text("time (Europe/Berlin)")
            for name in ("forecast (cnn-96)", "forecast P10–P90", "said a day ahead (cnn-96)", "actual"):
                expect(fc.locator(".legendtext", has_text=name)).to_have_count(1)
            expect(page.locator("#home-charts .chart[data-key=energy] .legendtext")).to_have_count(6)
            page.locator("#home").screenshot(path=str(shots / "home-view.png"))
            page.screenshot(path=str(shots / "house-page.png"), full_page=True)

            # one time format, in the house's zone: no UTC time anywhere on the page
            body = page.locator("main").inner_text()
            assert "UTC" not in body and (" CET" in body or " CEST" in body), body[:2000]
            expect(page.locator("#nodes td").last).to_have_text(now.astimezone(TZ).strftime("%Y-%m-%d %H:%M %Z"))
            # verdicts: in words, the learning line instead of "learning" and "—"
            live = page.locator("#live-skill")
            expect(live.locator("tr[data-model='cnn-1'] .verdict")).to_have_text(
                "learning: 120 of 300 slots scored, about 2 days left")
            expect(live.locator("tr[data-model='cnn-96'] .guard")).to_have_text(
                "learning: 200 of 480 slots scored, about 3 days left")
            val = rows["cnn-1"]["metrics"]["validation"]
            best = min(val["baselines"], key=lambda b: val["baselines"][b]["mae"])
            ratio = val["int8"]["mae"] / val["baselines"][best]["mae"]
            cell = page.locator(f"#versions tr[data-version='{v}'][data-name='cnn-1'] .vs-best")
            expect(cell).to_contain_text(f"{ratio:.3f}")
            expect(cell).to_contain_text(baseline_words(best))
            verdict_class = "ok" if ratio <= 0.98 else "bad" if ratio >= 1.02 else "same"
            expect(cell).to_have_class(f"vs-best {verdict_class}")
            expect(page.locator("#versions th", has_text="error vs the best simple guess")).to_contain_text(
                "lower is better")
            expect(page.locator(f"#versions tr[data-version='{v}'] .run-kind").first).to_have_text("quick")
            # validation charts: the active versions', labelled, their periods, baseline and band drawn
            expect(page.locator("#validation-plots .chart[data-drawn]")).to_have_count(4, timeout=30_000)
            fig = page.locator("#validation-plots figure[data-name='cnn-96']")
            expect(fig.locator("figcaption")).to_contain_text(f"cnn-96 {v} quick training · active")
            expect(fig.locator(".period")).to_contain_text("validation 2023-")
            expect(fig.locator(".legendtext", has_text="best simple guess")).to_have_count(1)
            expect(fig.locator(".legendtext", has_text="P10–P90")).to_have_count(1)
            expect(fig.locator(".g-xtitle")).to_have_text("time (Europe/Berlin)")
            # the push the gate held back: one short line, the details folded; the overview says so too
            pushed = page.locator("#pushes li").first
            expect(pushed.locator(".push-line")).to_have_text(
                "not installed: no data newer than its training yet; pull again in 2 days or use override")
            expect(pushed.locator("details")).not_to_have_attribute("open", "")
            expect(pushed.locator("details small")).to_have_text(str(held))
            # Roll back is offered for cnn-1 only: the others have no previous version
            expect(page.locator("#rollback select option")).to_have_text(["cnn-1"])
            page.locator("#models").screenshot(path=str(shots / "models.png"))
            page.goto(f"{base}/")
            cell = page.locator(f"#houses tr[data-house='{node['id']}'] td.last-push")
            expect(cell).to_contain_text("held by the gate")
            expect(cell).to_contain_text("no data newer than its training yet")
            expect(page.locator("#houses .problems")).to_have_count(0)  # a held push is no fault of the house
            browser.close()
        assert not errors, errors
        if os.environ.get("DOCS_SCREENSHOTS"):  # once, for the README and docs/server.md
            for name in ("home-view.png", "models.png"):
                shutil.copy(shots / name, ROOT / "docs" / "img" / f"server-{name}")
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_a_grid_only_house_gets_no_autarky_and_no_pv_columns(app, logged_in, influxd_session, influx_db_name):
    now = _now()
    now_ns = int(now.timestamp() * 1e9)
    pts = [Point("energy_flow", {}, {"house": 0.2, "grid_import": 0.2, "grid_export": 0.0, "pv": 0.0,
                                     "battery_charge": 0.0, "battery_discharge": 0.0, "self_supplied": 0.0,
                                     "autarky": 0.0}, t) for t in range(now_ns - 3 * DAY, now_ns + 1, SLOT_NS)]
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    st.write(pts)
    st.close()
    from tests.helpers.server import AUTH

    node = app.test_client().post("/api/v1/nodes", headers=AUTH, json={
        "name": "flat", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
        "influx": {"url": influxd_session.url, "database": influx_db_name}}).json
    r = logged_in.get(f"/nodes/{node['id']}/home.json")
    assert r.status_code == 200, r.get_data(as_text=True)[:2000]
    doc = r.json
    html = doc["html"]
    assert "Autarky" not in html and "PV today" not in html and "To the grid" not in html, html
    assert "everything it uses comes from the grid" in html
    assert "No day-ahead forecast" in html and "UTC" in html  # the agent has not said its zone: UTC, and says so
    energy = __import__("json").loads(doc["energy"])
    assert [t["name"] for t in energy["data"]] == ["house", "from the grid"]


def test_without_an_energy_flow_the_actual_comes_from_the_meter(influxd_session, influx_db_name):
    """A house whose agent runs no flow: the chart's actual consumption is the meter's counter per slot."""
    from tests.server.test_skill import NOW, _house

    values, _ = _house(influxd_session, influx_db_name)  # a counter for nine days before NOW
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    got = home.actual(st, {"measurement": "EnergyMeter", "field": "EnergyIn", "tags": {"device_id": "meter-1"}},
                      NOW - timedelta(hours=24), NOW + timedelta(seconds=1), ("EnergyMeter", "EnergyIn"))
    st.close()
    assert len(got) == 96 + 1 and max(got) == int(NOW.timestamp() * 1e9)
    for t, v in got.items():
        assert v == pytest.approx(values[t], abs=1e-6)


@pytest.mark.timeout(120)
def test_the_view_reads_a_house_that_keeps_its_flow_in_the_keep_policy(app, logged_in, influxd_session,
                                                                       influx_db_name):
    """With the agent's [retention] (as Ansible and compose ship it) energy_flow and the forecasts live in the
    policy `keep`: the view must read them there (it read the default policy and showed an empty house)."""
    now = _now()
    now_ns = int(now.timestamp() * 1e9)
    influxd_session.query(f'CREATE RETENTION POLICY "keep" ON "{influx_db_name}" DURATION INF REPLICATION 1',
                          method="POST")
    pts = [Point("energy_flow", {}, {"house": 0.25, "grid_import": 0.25, "grid_export": 0.0, "pv": 0.0,
                                     "battery_charge": 0.0, "battery_discharge": 0.0, "self_supplied": 0.0,
                                     "autarky": 0.0}, t) for t in range(now_ns - 2 * DAY, now_ns + 1, SLOT_NS)]
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name, keep_policy="keep"))
    st.write(pts)
    st.close()
    assert influxd_session.query('SELECT count("house") FROM "energy_flow"', db=influx_db_name)[
        "results"][0].get("series") is None  # nothing in the default policy
    from tests.helpers.server import AUTH

    node = app.test_client().post("/api/v1/nodes", headers=AUTH, json={
        "name": "kept", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
        "influx": {"url": influxd_session.url, "database": influx_db_name}}).json
    r = logged_in.get(f"/nodes/{node['id']}/home.json")
    assert r.status_code == 200, r.get_data(as_text=True)[:2000]
    energy = __import__("json").loads(r.json["energy"])
    house = next(t for t in energy["data"] if t["name"] == "house")
    assert max(v for v in house["y"] if v is not None) == pytest.approx(0.25 * 96, abs=1e-6)


def test_autarky_is_rounded_once_for_the_page():
    """45.496 % showed as 46 %: the page rounded the share already rounded to 3 decimals (0.455) again."""
    from datetime import date

    from server.home import Day

    d = Day(date(2026, 12, 6), 96, 96, {"house": 10.0, "self_supplied": 4.5496}).to_dict()
    assert d["autarky"] == 0.455 and d["autarky_pct"] == 45
    assert Day(date(2026, 12, 6), 96, 96, {"house": 10.0}).to_dict()["autarky_pct"] is None
