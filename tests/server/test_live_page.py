"""The house's page shows, per active model, the live skill the agent scored itself (its `forecast_skill` rows,
read from a real influxd) next to the version's validation figures, the P10–P90 coverage and the guard's state and
reason, with plotly charts (axes, units, hover values) — in a real headless Chromium against real gunicorn."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server import jobs, nodes
from server.pull import DEFAULT_SERIES
from server.skill import history, live_skill
from shared.points import Point
from shared.schema import BUNDLE_NAMES
from shared.storage import StorageConfig, open_storage
from tests.helpers.server import PASSWORD, start_gunicorn
from tests.server.test_skill import NOW, _house

ROOT = Path(__file__).resolve().parents[2]
V = "20260301T000000Z"


def _skill_rows(url: str, db: str, now: datetime, name: str, version: str, skill, coverage=None,
                days: float = 2, window: str = "7d", mae: float = 0.05) -> None:
    """What the agent writes every cycle: the rolling 7-day figures of a version (hand-made values)."""
    n = int(days * 96)
    pts = []
    for i in range(n):
        t = now - timedelta(minutes=15 * (n - 1 - i))
        sk = skill(i / max(n - 1, 1)) if callable(skill) else skill
        fields = {"mae_kwh": mae, "rmse_kwh": mae * 1.4, "bias_kwh": 0.001, "slots": 600, "skill": sk,
                  "skill_slots": 600, "baseline": "persistence", "baseline_mae_kwh": mae / (1 - sk)}
        if coverage is not None:
            fields |= {"p10_p90_coverage": coverage, "coverage_slots": 600}
        tags = {"horizon": name.rsplit("-", 1)[1], "issue": "rolling" if name.endswith("-1") else "day_ahead",
                "model": name.split("-")[0], "name": name, "version": version, "window": window}
        pts.append(Point("forecast_skill", tags, fields, int(t.timestamp() * 1e9)))
    st = open_storage(StorageConfig(url=url, database=db))
    st.write(pts)
    st.close()


def test_the_agents_forecast_skill_is_read_and_the_server_computes_only_without_it(influxd_session,
                                                                                    influx_db_name):
    """cnn-1's agent wrote forecast_skill: its 7-day figure is shown as it is (not the 1-day one, not another
    version's, not a recomputation). cnn-96 has forecasts but no forecast_skill: the server computes it."""
    _house(influxd_session, influx_db_name)  # meter + forecasts of cnn-1 and cnn-96 (version V)
    url = influxd_session.url
    _skill_rows(url, influx_db_name, NOW, "cnn-1", V, 0.12, coverage=0.78)
    _skill_rows(url, influx_db_name, NOW, "cnn-1", V, 0.5, window="1d")
    _skill_rows(url, influx_db_name, NOW, "cnn-1", "20260201T000000Z", -0.3)
    st = open_storage(StorageConfig(url=url, database=influx_db_name))
    influx = {"measurement": "EnergyMeter", "field": "EnergyIn", "tags": {"device_id": "meter-1"}}
    got = live_skill(st, influx, {"cnn-1": V, "cnn-96": V}, NOW, DEFAULT_SERIES)
    hist = history(st, {"cnn-1": [V, "20260201T000000Z"], "lstm-1": ["20260301T000000Z"]}, NOW)
    st.close()
    assert got["cnn-1"]["source"] == "edge" and got["cnn-1"]["skill"] == 0.12, got
    assert got["cnn-1"]["coverage"] == 0.78 and got["cnn-1"]["n"] == 600 and got["cnn-1"]["mae"] == 0.05
    assert got["cnn-1"]["at"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert got["cnn-96"]["source"] == "server" and got["cnn-96"]["baseline"] == "same slot yesterday", got
    assert "coverage" not in got["cnn-96"]
    # the chart's history: hourly, per version, only the 7-day rows
    assert [(h["name"], h["version"]) for h in hist] == [("cnn-1", V), ("cnn-1", "20260201T000000Z")]
    assert len(hist[0]["t"]) == 49 and set(hist[0]["skill"]) == {0.12} and set(hist[0]["coverage"]) == {0.78}
    assert set(hist[1]["skill"]) == {-0.3} and set(hist[1]["coverage"]) == {None}


def test_the_guard_part_of_the_status_is_kept_checked():
    doc = {"agent_version": "0.9", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"}, "models": {},
           "guard": {"enabled": True, "models": {
               "cnn-96": {"version": V, "horizon": 96, "state": "shadow", "since": "2026-03-09T00:00:00Z",
                          "reason": "guard: cnn-96 lost to median_7_days\x1b[31m" + "x" * 500, "skill": -0.087},
               "lstm-1": {"version": V, "state": "hacked"}, "BAD NAME": {"state": "serving"}},
               "serving": {"96": {"name": "median_7_days", "model": "baseline", "version": "median_7_days",
                                  "fallback_reason": "guard: cnn-96 lost"}, "7": {"name": "x"}}}}
    guard = nodes.clean_status(doc)["guard"]
    assert set(guard["models"]) == {"cnn-96"} and guard["enabled"] is True
    g = guard["models"]["cnn-96"]
    assert g["state"] == "shadow" and g["skill"] == -0.087 and "\x1b" not in g["reason"] and len(g["reason"]) <= 300
    assert set(guard["serving"]) == {"96"} and guard["serving"]["96"]["fallback_reason"] == "guard: cnn-96 lost"
    assert nodes.clean_status({**doc, "guard": "nonsense"})["guard"] is None


def test_a_model_in_the_shadow_puts_its_house_on_top_of_the_overview(app):
    from server import overview
    from tests.helpers.server import AUTH

    s = app.extensions["home_energy"]
    c = app.test_client()
    ids = [c.post("/api/v1/nodes", headers=AUTH, json={"name": name, "api_url": "http://127.0.0.1:9",
                                                         "api_token": "t" * 20}).json["id"] for name in ("a", "b")]
    entry = {"version": V, "sha256": "a" * 64, "activated_at": "2026-03-01T00:00:00Z"}
    for nid, state in zip(ids, ("serving", "shadow"), strict=True):
        status = nodes.clean_status({"agent_version": "0.9", "interpreter": {"name": "x", "version": "1"},
                                     "models": {"cnn-96": {"active": entry}},
                                     "guard": {"enabled": True, "models": {"cnn-96": {
                                         "version": V, "state": state, "reason": "guard: lost"}}}})
        s.db.set_node_status(nid, {"reachable": True, **status})
    rows = overview.rows(s.db)
    assert [r["name"] for r in rows] == ["b", "a"]
    assert rows[0]["problems"] == ["cnn-96 in the shadow (the baseline serves)"] and rows[1]["problems"] == []
    # a verdict about another version than the active one is not shown as this one's
    status = json.loads(s.db.node(ids[1])["status"])
    status["guard"]["models"]["cnn-96"]["version"] = "20250101T000000Z"
    s.db.set_node_status(ids[1], status)
    assert next(r for r in overview.rows(s.db) if r["name"] == "b")["problems"] == []


@pytest.mark.timeout(300)
def test_the_house_page_shows_live_skill_validation_coverage_and_guard_in_chromium(
        tmp_path, seed_bundles, influxd_session, influx_db_name):
    from playwright.sync_api import expect, sync_playwright

    from server.config import load_config
    from server.registry import node_owner
    from server.state import build_state
    from tests.server.test_browser import CHROMIUM, CHROMIUM_ARGS, api
    from training.data import load

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now -= timedelta(minutes=now.minute % 15)
    url, db = influxd_session.url, influx_db_name
    rising = lambda x: round(0.02 + 0.1 * x, 4)  # noqa: E731 - the skill climbs over the two weeks
    server = start_gunicorn(tmp_path / "gunicorn", job_worker=False)  # the test plays the job worker
    try:
        s = build_state(load_config(server.config))
        base = f"http://localhost:{server.port}"
        node = api(base, "/api/v1/nodes", {"name": "house-7", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
                                           "influx": {"url": url, "database": db}})
        series = load([ROOT / "data" / "seed_house" / "raw_data.csv"])
        rows = {r["name"]: r for r in s.registry.add_run([seed_bundles / n for n in BUNDLE_NAMES],
                                                         node_owner(node["id"]), series)}
        v = rows["cnn-1"]["version"]
        _skill_rows(url, db, now, "cnn-1", v, rising, coverage=0.77, days=14)
        _skill_rows(url, db, now, "cnn-96", v, -0.087, coverage=0.83, days=14, mae=0.071)
        _skill_rows(url, db, now - timedelta(days=5), "cnn-96", "20230101T000000Z", 0.03, coverage=0.8, days=9)
        entry = lambda r: {"version": r["version"], "sha256": r["sha256"], "activated_at": "2026-03-01T00:00:00Z"}  # noqa: E731
        reason = ("guard: cnn-96 " + v + " lost to median_7_days over the last 7 days (MAE 0.0710 vs 0.0653 kWh "
                  "on 612 slots, skill -8.7%; back at a skill of +2.0%)")
        status = nodes.clean_status({
            "agent_version": "0.9", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"},
            "models": {"cnn-1": {"active": entry(rows["cnn-1"]), "previous": None},
                       "cnn-96": {"active": entry(rows["cnn-96"]),
                                  "previous": {"version": "20230101T000000Z", "sha256": "b" * 64,
                                               "activated_at": "2026-01-01T00:00:00Z"}}},
            "guard": {"enabled": True, "models": {
                "cnn-1": {"version": v, "state": "serving", "since": "2026-03-01T00:00:00Z", "reason": None},
                "cnn-96": {"version": v, "state": "shadow", "since": "2026-03-08T00:00:00Z", "reason": reason,
                           "skill": -0.087}}}})
        s.db.set_node_status(node["id"], {"reachable": True, **status})
        jobs.Worker(s).refresh_skill(s.db.node(node["id"]), now=now)  # what the job worker does every hour

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            cdn = []
            page.on("request", lambda r: cdn.append(r.url) if not r.url.startswith(base) else None)
            page.goto(f"{base}/nodes/{node['id']}")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login")
            live = page.locator("#live-skill")
            expect(live.locator("tr[data-model='cnn-1'] .live-skill")).to_contain_text("+12.0 %")  # the edge's
            expect(live.locator("tr[data-model='cnn-1'] .live-skill")).to_contain_text("edge, 600 slots")
            expect(live.locator("tr[data-model='cnn-1'] .coverage")).to_contain_text("77.0 %")
            val = rows["cnn-1"]["metrics"]["validation"]
            best = min(b["mae"] for b in val["baselines"].values())
            expect(live.locator("tr[data-model='cnn-1'] .validation-skill")).to_have_text(
                f"{100 * (1 - val['int8']['mae'] / best):+.1f} %")
            cov = val.get("interval", {}).get("calibration", {}).get("coverage")
            if cov is not None:
                expect(live.locator("tr[data-model='cnn-1'] .coverage")).to_contain_text(f"{100 * cov:.1f} %")
            expect(live.locator("tr[data-model='cnn-96'] .guard")).to_contain_text("shadow — the baseline serves")
            expect(live.locator("tr[data-model='cnn-96'] .guard-reason")).to_have_text(reason)
            expect(live.locator("tr[data-model='cnn-96'] .live-skill")).to_contain_text("-8.7 %")
            expect(live.locator("tr[data-model='cnn-1'] .guard")).to_contain_text("serving")
            expect(live.locator("tr[data-model='cnn-1'] .verdict")).to_have_text(
                "12 % better than the best simple guess")  # the edge's 7-day skill, in words
            expect(live.locator("tr[data-model='cnn-96'] .verdict")).to_have_text(
                "9 % worse than the best simple guess")
            expect(live.locator("tr[data-model='lstm-1'] .verdict")).to_have_text("no model")
            # the house has no energy flow or forecasts yet: the homeowner's view says so, without an error
            expect(page.locator("#today [data-field=house]")).to_have_text("— kWh", timeout=30_000)
            expect(page.locator(".home-error")).to_be_hidden()
            # charts: the two live charts (fetched from the house's InfluxDB) and the four validation plots
            expect(page.locator("#live-charts .chart[data-drawn]")).to_have_count(2, timeout=30_000)
            expect(page.locator("#validation-plots .chart[data-drawn]")).to_have_count(4)
            skill_chart = page.locator("#live-charts .chart[data-key=skill]")
            expect(skill_chart.locator(".g-ytitle")).to_have_text("skill vs best baseline (%)")
            expect(skill_chart.locator(".g-xtitle")).to_have_text("time (UTC)")
            expect(skill_chart.locator(".legendtext")).to_have_count(3)  # cnn-1, cnn-96 and its previous version
            expect(page.locator("#live-charts .chart[data-key=coverage] .g-ytitle")).to_have_text(
                "P10–P90 coverage (%)")
            expect(page.locator("#validation-plots .chart").first.locator(".g-ytitle")).to_have_text(
                "kWh per 15 min")
            skill_chart.scroll_into_view_if_needed()  # below the homeowner's view now
            box = skill_chart.locator(".nsewdrag").first.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
            hover = skill_chart.locator(".hoverlayer")
            expect(hover).to_contain_text("%")
            assert re.search(r"[+-]?\d+\.\d %", hover.text_content()), hover.text_content()
            page.screenshot(path=str(tmp_path / "live-skill.png"), full_page=True)
            page.locator("#live").screenshot(path=str(tmp_path / "live-section.png"))
            if os.environ.get("DOCS_SCREENSHOTS"):  # once, for docs/server.md
                shutil.copy(tmp_path / "live-section.png", ROOT / "docs" / "img" / "server-live-skill.png")
            page.goto(f"{base}/")  # the overview: the house is flagged for its model in the shadow
            expect(page.locator("#houses .problems")).to_have_text("cnn-96 in the shadow (the baseline serves)")
            expect(page.locator("#houses .guard-shadow")).to_have_count(1)
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
            browser.close()
        assert not cdn, cdn  # plotly.js comes from this server, nothing from elsewhere
        assert (tmp_path / "live-skill.png").stat().st_size > 20_000
    finally:
        server.stop()


def test_plotly_js_is_served_from_the_installed_package(app):
    c = app.test_client()
    zipped = c.get("/vendor/plotly.min.js?v=x", headers={"Accept-Encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.headers["Content-Encoding"] == "gzip"
    assert "max-age=31536000" in zipped.headers["Cache-Control"]
    plain = c.get("/vendor/plotly.min.js").data
    assert plain.startswith(b"/**") and b"plotly.js" in plain[:400] and len(plain) > 1_000_000
