"""The JSON API and the page's protections, through Flask's test client (with a real agent where it matters)."""

import json
import time

from shared.verdict import baseline_words
from tests.conftest import SEED_CSV
from tests.helpers.models import TOKEN as AGENT_TOKEN
from tests.helpers.server import AUTH, PASSWORD, csrf_of, job_finished


def test_unauthenticated_and_csrfless_requests_are_refused(app, logged_in):
    c = app.test_client()
    assert c.get("/api/v1/nodes").status_code == 401
    assert c.post("/api/v1/train", json={"data": [str(SEED_CSV)]}).status_code == 401
    assert c.get("/").status_code == 302  # to the login page
    assert c.post("/nodes", data={"name": "x"}).status_code == 302
    assert c.get("/api/v1/nodes", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # logged in but no CSRF token: refused, nothing changed
    r = logged_in.post("/api/v1/nodes", json={"name": "n", "api_url": "http://127.0.0.1:1", "api_token": "t" * 20})
    assert r.status_code == 403 and r.json["error"]["code"] == "csrf"
    assert logged_in.post("/nodes", data={"name": "n", "api_url": "http://127.0.0.1:1",
                                          "api_token": "t" * 20}).status_code == 403
    assert app.test_client().get("/api/v1/nodes", headers=AUTH).json["nodes"] == []


def test_login_wrong_password_and_rate_limit(app):
    c = app.test_client()
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"username": "admin", "password": "nope", "csrf_token": csrf})
    assert r.status_code == 401 and "Wrong user name or password" in r.get_data(as_text=True)
    assert c.post("/login", data={"username": "admin", "password": PASSWORD}).status_code == 403  # no CSRF
    for _ in range(4):
        c.post("/login", data={"username": "admin", "password": "nope", "csrf_token": csrf})
    r = c.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf})
    assert r.status_code == 429  # even the right password waits once the limit is reached


def test_session_cookie_flags(tmp_path):
    from server import create_app
    from tests.helpers.server import server_config

    cfg = server_config(tmp_path)
    cfg.session_cookie_secure = True
    app = create_app(cfg)
    c = app.test_client()
    r = c.get("/login", base_url="https://localhost")
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_bad_input_is_a_clear_message(app, logged_in):
    c = app.test_client()
    r = c.post("/api/v1/nodes", headers=AUTH, json={"name": "pi", "api_url": "ftp://x", "api_token": "t" * 20})
    assert r.status_code == 400 and "http(s)" in r.json["error"]["message"]
    r = c.post("/api/v1/nodes", headers=AUTH, json={"name": "pi", "api_url": "http://127.0.0.1:9",
                                                     "api_token": "t" * 20,
                                                     "influx": {"url": "http://127.0.0.1:9", "database": "energy"}})
    assert r.status_code == 201 and r.json["status"]["reachable"] is False  # unreachable, shown as such
    nid = r.json["id"]
    r = c.post(f"/api/v1/nodes/{nid}/pull", headers=AUTH, json={"start": "2023-06-02T00:00:00Z",
                                                                "end": "2023-06-01T00:00:00Z"})
    assert r.status_code == 400 and "invalid time range" in r.json["error"]["message"]
    r = c.post(f"/api/v1/nodes/{nid}/pull", headers=AUTH, json={"start": "yesterday", "end": "today"})
    assert r.status_code == 400 and "ISO 8601" in r.json["error"]["message"]
    r = c.post(f"/api/v1/nodes/{nid}/rollback", headers=AUTH, json={"name": "cnn-1"})
    assert r.status_code == 502 and "unreachable" in r.json["error"]["message"]
    # the page shows the same message
    page = logged_in.post(f"/nodes/{nid}/pull", data={"start": "2023-06-02T00:00:00Z", "end": "2023-06-01T00:00:00Z",
                                                     "csrf_token": logged_in.csrf}, follow_redirects=True)
    assert "invalid time range" in page.get_data(as_text=True)
    assert c.get("/api/v1/jobs", headers=AUTH).json["jobs"] == []  # nothing queued


def test_train_register_push_gate_and_rollback(app, worker, edge_agent):
    c = app.test_client()
    r = c.post("/api/v1/nodes", headers=AUTH, json={"name": "pi", "api_url": edge_agent.url,
                                                     "api_token": edge_agent.token})
    assert r.status_code == 201 and r.json["status"]["reachable"] is True
    nid = r.json["id"]
    versions = []
    for until in ("2023-04-01T00:00:00Z", "2023-05-01T00:00:00Z"):
        job = c.post(f"/api/v1/nodes/{nid}/train", headers=AUTH,
                     json={"data": [str(SEED_CSV)], "until": until, "quick": True}).json
        busy = c.post(f"/api/v1/nodes/{nid}/train", headers=AUTH, json={"data": [str(SEED_CSV)], "quick": True})
        assert busy.status_code == 409  # one job per node at a time
        job = job_finished(c, job, timeout=300, interval=0.5)
        assert job["state"] == "done", job
        assert job["percent"] == 100 and "[cnn-1]" in job["log"]
        versions.append(job["result"]["versions"]["cnn-1"])
    models = c.get("/api/v1/models", headers=AUTH).json["versions"]
    assert {m["name"] for m in models} == {"cnn-1", "lstm-1", "cnn-96", "lstm-96"} and len(models) == 8
    row = c.get(f"/api/v1/models/cnn-1/{versions[0]}", headers=AUTH).json
    plot = json.loads(row["plot"])  # a plotly figure: forecast and actual, in kWh per 15 min
    bases = row["metrics"]["validation"]["baselines"]
    best = min(bases, key=lambda b: bases[b]["mae"])
    # with the best simple guess the model is judged against and the P10-P90 band (quick bundles have one)
    assert [t["name"] for t in plot["data"] if t.get("showlegend", True)] == [
        "P10–P90", "actual", f"best simple guess: {baseline_words(best)}", "forecast"]
    assert plot["layout"]["yaxis"]["title"]["text"] == "kWh per 15 min"
    assert plot["layout"]["title"]["text"] == f"cnn-1 {versions[0]} (quick training)"
    assert row["quick"] == 1 and "persistence" in bases
    # manual push with override: accepted by the agent
    r = c.post(f"/api/v1/nodes/{nid}/push", headers=AUTH, json={"version": versions[1], "override": True})
    assert all(x["ok"] for x in r.json["results"]), r.json
    st = c.get(f"/api/v1/nodes/{nid}?refresh=1", headers=AUTH).json["status"]
    assert st["models"]["cnn-1"]["active"]["version"] == versions[1]
    # the older version is rejected by the node (its policy), with the node's reason
    r = c.post(f"/api/v1/nodes/{nid}/push", headers=AUTH, json={"version": versions[0], "override": True,
                                                                "names": ["cnn-1"]})
    assert r.json["results"][0]["ok"] is False and r.json["results"][0]["code"] == "older_version"
    # without override and without recent data the gate refuses to replace the active model
    r = c.post(f"/api/v1/nodes/{nid}/push", headers=AUTH, json={"version": versions[0], "names": ["lstm-1"]})
    assert r.json["results"][0]["ok"] is False and "gate" in r.json["results"][0]
    # ... and the refusal is recorded like a push: one line, the gate's reasoning as its details
    held = app.extensions["home_energy"].db.all("SELECT ok, code, message, details FROM pushes ORDER BY id DESC")[0]
    assert held == {"ok": 0, "code": "gate", "message": "not installed: no recent data to compare on; pull history "
                    "or use override", "details": r.json["results"][0]["gate"]}
    assert r.json["results"][0]["summary"] == held["message"]
    r = c.post(f"/api/v1/nodes/{nid}/rollback", headers=AUTH, json={"name": "cnn-1"})
    assert r.status_code == 409 and "no previous" in r.json["error"]["message"]


def test_cancel_a_running_training(app, worker):
    c = app.test_client()
    job = c.post("/api/v1/train", headers=AUTH, json={"data": [str(SEED_CSV)]}).json  # full training: long
    for _ in range(100):
        if c.get(f"/api/v1/jobs/{job['id']}", headers=AUTH).json["state"] == "running":
            break
        time.sleep(0.1)
    assert c.post(f"/api/v1/jobs/{job['id']}/cancel", headers=AUTH).status_code == 200
    for _ in range(200):
        state = c.get(f"/api/v1/jobs/{job['id']}", headers=AUTH).json["state"]
        if state == "cancelled":
            break
        time.sleep(0.1)
    assert state == "cancelled"
    assert json.loads(json.dumps(c.get("/api/v1/models", headers=AUTH).json))["versions"] == []


def test_failed_logins_are_counted_per_account_too(tmp_path):
    """Guessing from many addresses: the account's own limit stops it (login_account_attempts)."""
    from server import create_app
    from tests.helpers.server import server_config

    app = create_app(server_config(tmp_path, login_attempts=5, login_account_attempts=8))
    codes = []
    for i in range(10):
        c = app.test_client()
        c.environ_base["REMOTE_ADDR"] = f"203.0.113.{i}"
        csrf = csrf_of(c.get("/login").get_data(as_text=True))
        codes.append(c.post("/login", data={"username": "admin", "password": f"guess-{i}", "csrf_token": csrf})
                     .status_code)
    assert codes == [401] * 8 + [429, 429], codes
    # another account name is not locked (nor revealed: the answer is the same as for a wrong password)
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = "198.51.100.1"
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    assert c.post("/login", data={"username": "root", "password": "x", "csrf_token": csrf}).status_code == 401


def test_a_houses_training_takes_the_public_holidays_its_agent_is_configured_with(
        app, worker, logged_in, tmp_path, mosquitto_session, influxd_session, influx_db_name):
    """`[forecast] holidays` on the edge → the agent's status `calendar` → the node's trainings get the holiday
    input (the bundle declares the calendar); a training may say otherwise, and a bad code names the field."""
    from edge_agent.forecast.component import ForecastConfig
    from server.jobs import training_calendar
    from shared import manifest as mf
    from shared import signing
    from tests.helpers.agent import start_agent
    from tests.helpers.models import agent_config

    keys = app.extensions["home_energy"].keys
    cfg = agent_config(tmp_path / "agent", mosquitto_session.port, influxd_session.url, influx_db_name,
                       signing.KeyPair(keys.private), forecast_extra='holidays = "DE-HE"\ntimezone = "Europe/Berlin"')
    agent = start_agent(cfg, components=("forecast", "api"))
    try:
        c = app.test_client()
        r = c.post("/api/v1/nodes", headers=AUTH, json={"name": "hessen", "api_url": agent.components["api"].url,
                                                         "api_token": AGENT_TOKEN})
        assert r.status_code == 201, r.json
        assert r.json["status"]["calendar"] == {"holidays": "DE-HE", "timezone": "Europe/Berlin"}
        nid = r.json["id"]
        page = logged_in.get(f"/nodes/{nid}").get_data(as_text=True)
        assert "with public holidays DE-HE (Europe/Berlin), from the agent's config" in page
        bad = c.post(f"/api/v1/nodes/{nid}/train", headers=AUTH, json={"data": [str(SEED_CSV)], "holidays": "XX"})
        assert bad.status_code == 400 and bad.json["error"]["field"] == "holidays"
        assert "unknown country 'XX'" in bad.json["error"]["message"]
        job = c.post(f"/api/v1/nodes/{nid}/train", headers=AUTH,
                     json={"data": [str(SEED_CSV)], "until": "2023-05-10T00:00:00Z", "quick": True}).json
        job = job_finished(c, job, timeout=300, interval=0.5)
        assert job["state"] == "done", job
        assert "public holidays DE-HE (Europe/Berlin, the agent's config)" in job["log"]
        reg = app.extensions["home_energy"].registry
        row = reg.get(job["result"]["owner"], "cnn-96", job["result"]["versions"]["cnn-96"])
        assert mf.load(row["path"])["window"]["holidays"] == {"country": "DE", "subdivision": "HE",
                                                               "timezone": "Europe/Berlin"}
    finally:
        agent.stop()
    node = {"name": "n", "status": json.dumps({"calendar": {"holidays": "DE", "timezone": "Europe/Berlin"}})}
    assert training_calendar({}, node) == ({"holidays": "DE", "timezone": "Europe/Berlin"}, "the agent's config")
    assert training_calendar({"holidays": ""}, node) == (None, "the job")  # none, whatever the agent says
    assert training_calendar({"holidays": "AT", "timezone": "Europe/Vienna"}, node)[0]["holidays"] == "AT"
    assert training_calendar({}, {"name": "n", "status": None}) == (None, "")
    assert ForecastConfig().holidays == ""  # none by default
