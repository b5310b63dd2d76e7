"""The page in a real headless Chromium against a real gunicorn: log in, see the overview of the houses, open the
house's page, train on a slice of the real data (a Ray task of the job worker's embedded Ray), watch the progress bar
finish, push to a real running edge agent, see its active version change there and on the overview."""

from __future__ import annotations

import time
import urllib.request

import pytest
from werkzeug.security import generate_password_hash

from shared import signing
from tests.conftest import SEED_CSV
from tests.helpers.agent import start_agent
from tests.helpers.models import TOKEN as AGENT_TOKEN
from tests.helpers.models import agent_config
from tests.helpers.server import API_TOKEN, PASSWORD
from tools.services import Gunicorn

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture
def stack(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    data_dir = tmp_path / "server"
    keys = signing.load_or_create_keypair(data_dir / "keys" / "signing.key")  # the server reuses it
    agent = start_agent(agent_config(tmp_path / "agent", mosquitto_session.port, influxd_session.url,
                                     influx_db_name, keys), components=("forecast", "api"))
    with Gunicorn(tmp_path / "gunicorn", generate_password_hash(PASSWORD), API_TOKEN, data_dir=data_dir,
                  extra_config=f'status_poll_s = 2\ntraining_data_dirs = ["{SEED_CSV.parent}"]\n') as server:
        yield f"http://localhost:{server.port}", agent
    agent.stop()


def api(url: str, path: str, doc: dict | None = None) -> dict:
    import json

    req = urllib.request.Request(url.replace("localhost", "127.0.0.1") + path,
                                 data=json.dumps(doc).encode() if doc is not None else None,
                                 headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.timeout(400)
def test_login_train_watch_push_in_chromium(stack, artefacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url, agent = stack
    api(url, "/api/v1/nodes", {"name": "pi", "api_url": agent.components["api"].url,
                               "api_token": AGENT_TOKEN})
    shots = artefacts_dir / "browser"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/")
        expect(page.locator("h2")).to_have_text("Log in")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "wrong")
        page.click("#login")
        expect(page.locator(".flash.error")).to_contain_text("Wrong user name or password")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login")
        expect(page.locator("#houses")).to_contain_text("pi")  # the overview of all houses
        expect(page.locator("#houses")).to_contain_text("ai-edge-litert")
        page.screenshot(path=str(shots / "1-logged-in.png"), full_page=True)
        page.click("#houses a:text-is('pi')")  # the house's own page
        expect(page.locator("#house-name")).to_have_text("pi")
        expect(page.locator("#nodes")).to_contain_text("ai-edge-litert")

        train = page.locator("form:has(button.train)")
        train.locator("input[name=data]").fill(str(SEED_CSV))
        train.locator("input[name=until]").fill("2023-04-15T00:00:00Z")
        train.locator("input[name=quick]").check()
        train.locator("button.train").click()
        expect(page.locator(".flash.ok")).to_contain_text("Training started")
        bar = page.locator("tr[data-job] progress").first
        expect(bar).to_be_visible()
        time.sleep(2)
        page.screenshot(path=str(shots / "2-training.png"), full_page=True)
        # the page polls the job; when it finishes the page reloads with the new versions
        expect(page.locator("#versions")).to_contain_text("cnn-1", timeout=300_000)
        expect(page.locator("tr[data-job] .state").first).to_have_text("done")
        option = page.locator("form:has(button.push) select[name=version] option").first
        version = option.get_attribute("value")
        assert option.inner_text() == f"{version} (quick)"  # the run says it was a quick training
        # the validation plots of the new run: plotly charts with their unit, drawn from the registry's figures
        expect(page.locator("#validation-plots .chart[data-drawn]")).to_have_count(4, timeout=30_000)
        expect(page.locator("#validation-plots .chart .g-ytitle").first).to_have_text("kWh per 15 min")
        page.screenshot(path=str(shots / "3-trained.png"), full_page=True)

        push = page.locator("form:has(button.push)")
        push.locator("input[name=override]").check()
        push.locator("button.push").click()
        expect(page.locator(".flash.ok").first).to_contain_text("accepted by the node")
        expect(page.locator("b[data-active='cnn-1']")).to_have_text(version)
        expect(page.locator("b[data-active='lstm-96']")).to_have_text(version)
        expect(page.locator(".trained-for")).to_have_count(0)  # its own models
        expect(page.locator("#no-rollback")).to_contain_text("no previous version")  # the first models: no Roll back
        expect(page.locator("#rollback")).to_have_count(0)
        page.screenshot(path=str(shots / "4-pushed.png"), full_page=True)
        page.click("text=← all houses")
        expect(page.locator("#houses b[data-active='cnn-1']")).to_have_text(version)
        expect(page.locator("#houses")).to_contain_text("accepted")  # the last push
        expect(page.locator("#houses .problems")).to_have_count(0)
        page.screenshot(path=str(shots / "5-overview.png"), full_page=True)
        browser.close()
    status = agent.components["api"].status()
    assert status["models"]["cnn-1"]["active"]["version"] == version
