"""Issue 13, server part: each finding reproduced against real gunicorn on loopback (training files, node URLs,
session revocation, the login redirect, login timing and its rate limit, the proxy)."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin

import pytest
import requests

from tests.helpers.server import API_TOKEN, PASSWORD, ForeignService, csrf_of, start_gunicorn, web_login

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """One gunicorn (2 workers, with its job worker) for the tests that do not exhaust the login limit."""
    server = start_gunicorn(tmp_path_factory.mktemp("web"))
    yield server
    server.stop()


def api(server, method: str, path: str, doc=None, **kw) -> requests.Response:
    return requests.request(method, server.url + path, json=doc, headers=AUTH, timeout=60, **kw)


def wait_job(server, job_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api(server, "GET", f"/api/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


# -- training data files ------------------------------------------------------------------------------------------
def test_train_refuses_files_outside_the_data_area(web):
    before = api(web, "GET", "/api/v1/jobs").json()["jobs"]
    for path in (str(web.data_dir / "secret_key"), "/proc/self/environ", "/etc/passwd", "../secret_key",
                 str(web.data_dir / "uploads" / ".." / "secret_key"), str(web.data_dir / "server.sqlite")):
        r = api(web, "POST", "/api/v1/train", {"data": [path], "quick": True})
        assert r.status_code == 400, (path, r.status_code, r.text)
        err = r.json()["error"]
        assert "data" in err["message"] and err.get("field") == "data", err
    assert api(web, "GET", "/api/v1/jobs").json()["jobs"] == before  # nothing queued, nothing read


def test_training_file_content_never_reaches_the_job_log(web):
    uploads = web.data_dir / "uploads"
    uploads.mkdir(exist_ok=True)
    (uploads / "leak.csv").write_text("TOPSECRET-4711,other\n1,2\n")
    r = api(web, "POST", "/api/v1/train", {"data": [str(uploads / "leak.csv")], "quick": True})
    assert r.status_code == 202, r.text
    job = wait_job(web, r.json()["id"])
    assert job["state"] == "failed"
    shown = json.dumps(job) + json.dumps(api(web, "GET", "/api/v1/jobs").json())
    assert "TOPSECRET" not in shown, shown
    assert "leak.csv" in job["error"]  # the file is named, its content is not


# -- node URLs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "http://user:pw@127.0.0.1:8750",
                                 "http://127.0.0.1:8750/?x=1", "http://127.0.0.1:8750/#f", "file:///etc/passwd",
                                 "http://:8750", "gopher://127.0.0.1:70", "http://127.0.0.1:8750\r\nX: y", 42])
def test_node_urls_are_validated_when_added(web, url):
    r = api(web, "POST", "/api/v1/nodes", {"name": "bad-url", "api_url": url, "api_token": "t" * 20})
    assert r.status_code == 400, (url, r.status_code, r.text)
    assert r.json()["error"]["field"] == "api_url"
    r = api(web, "POST", "/api/v1/nodes", {"name": "bad-influx", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
                                           "influx": {"url": url, "database": "energy"}})
    assert r.status_code == 400, (url, r.status_code, r.text)
    assert r.json()["error"]["field"] == "influx.url"


@pytest.mark.parametrize("answer", [
    (200, b'{"secret": "TOPSECRET-lan-service", "models": "TOPSECRET"}', "application/json"),
    (200, b"<html>TOPSECRET router page</html>", "text/html"),
    (500, b'{"error": {"code": "x", "message": "TOPSECRET in an error"}}', "application/json"),
    (200, json.dumps({"agent_version": "TOPSECRET" * 20, "interpreter": {"name": "x", "version": "1"},
                      "models": {}, "last_forecast": None, "counters": {}}).encode(), "application/json"),
])
def test_polling_a_foreign_url_stores_and_shows_nothing_of_its_answer(web, answer):
    status, body, ctype = answer
    foreign = ForeignService(status, body, ctype)
    try:
        name = f"foreign-{status}-{len(body)}"
        r = api(web, "POST", "/api/v1/nodes", {"name": name, "api_url": foreign.url, "api_token": "t" * 20})
        assert r.status_code == 201, r.text
        nid = r.json()["id"]
        shown = r.text + api(web, "GET", f"/api/v1/nodes/{nid}?refresh=1").text + api(web, "GET", "/api/v1/nodes").text
        assert "TOPSECRET" not in shown, shown
        assert r.json()["status"]["reachable"] is False
        s, _ = web_login(web.url)
        assert "TOPSECRET" not in s.get(f"{web.url}/", timeout=30).text
    finally:
        foreign.close()


def test_polling_keeps_only_the_documented_status_fields(web):
    doc = {"agent_version": "0.1.0", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0", "x": "TOPSECRET"},
           "models": {"cnn-1": {"active": {"version": "20260101T000000Z", "sha256": "a" * 64,
                                           "activated_at": "2026-01-01T00:00:00Z", "note": "TOPSECRET"},
                                "previous": None}},
           "last_forecast": "2026-01-01T00:15:00Z", "counters": {"stored": 5, "odd key!": 1},
           "extra": "TOPSECRET"}
    foreign = ForeignService(200, json.dumps(doc).encode())
    try:
        r = api(web, "POST", "/api/v1/nodes", {"name": "shaped", "api_url": foreign.url, "api_token": "t" * 20})
        assert r.status_code == 201, r.text
        st = r.json()["status"]
        assert "TOPSECRET" not in r.text, r.text
        assert st["reachable"] is True and st["interpreter"] == {"name": "ai-edge-litert", "version": "2.3.0"}
        assert st["models"]["cnn-1"]["active"]["version"] == "20260101T000000Z"
        assert st["counters"] == {"stored": 5}
    finally:
        foreign.close()


def test_a_status_with_a_counter_that_is_not_a_number_is_not_an_agents(web):
    """The agent client (shared/agent_client.py) refuses the whole answer: nothing of it is stored or shown."""
    doc = {"agent_version": "0.1.0", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"}, "models": {},
           "last_forecast": None, "counters": {"stored": 5, "odd": "TOPSECRET"}}
    foreign = ForeignService(200, json.dumps(doc).encode())
    try:
        r = api(web, "POST", "/api/v1/nodes", {"name": "odd-counter", "api_url": foreign.url, "api_token": "t" * 20})
        assert r.status_code == 201 and "TOPSECRET" not in r.text, r.text
        assert r.json()["status"] == {"reachable": False, "code": "bad_response",
                                      "error": "the answer is not an agent's status (wrong URL?)"}
    finally:
        foreign.close()


# -- sessions -------------------------------------------------------------------------------------------------------
def test_logout_revokes_the_session(web):
    s, r = web_login(web.url)
    assert r.status_code == 302
    cookie = s.cookies.get("session")
    assert s.get(f"{web.url}/", allow_redirects=False, timeout=30).status_code == 200
    csrf = csrf_of(s.get(f"{web.url}/", timeout=30).text)
    assert s.post(f"{web.url}/logout", data={"csrf_token": csrf}, allow_redirects=False, timeout=30).status_code == 302
    # someone who copied the cookie before the logout replays it
    replay = requests.Session()
    replay.cookies.set("session", cookie)
    assert replay.get(f"{web.url}/", allow_redirects=False, timeout=30).status_code == 302
    assert replay.get(f"{web.url}/api/v1/nodes", timeout=30).status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "///evil.example/x", "/\\evil.example/x", "\\\\evil.example",
                                    "https://evil.example/x", "/%2F%2Fevil.example", " //evil.example", "/\t/evil.example",
                                    "javascript:alert(1)"])
def test_login_redirects_only_to_this_site(web, target):
    _, r = web_login(web.url, next_path=target)
    assert r.status_code == 302
    location = r.headers["Location"]
    # a browser strips tabs/newlines and reads "\\" as "/": only "/x…" with no such characters stays on this site
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert not any(c in location for c in "\\\t\r\n ") and location.isprintable(), location
    assert urljoin(f"{web.url}/login", location).startswith(f"{web.url}/"), location


def test_login_redirect_keeps_a_local_path(web):
    _, r = web_login(web.url, next_path="/api/v1/status")
    assert r.status_code == 302 and r.headers["Location"] == "/api/v1/status"


# -- login timing and the rate limit ---------------------------------------------------------------------------------
def _login_attempt(base: str, user: str, password: str, headers: dict | None = None) -> tuple[int, float]:
    s = requests.Session()
    csrf = csrf_of(s.get(f"{base}/login", timeout=30, headers=headers).text)
    t0 = time.perf_counter()
    r = s.post(f"{base}/login", data={"username": user, "password": password, "csrf_token": csrf}, headers=headers,
               allow_redirects=False, timeout=60)
    return r.status_code, time.perf_counter() - t0


def test_login_time_does_not_reveal_the_user_name(tmp_path):
    with start_gunicorn(tmp_path / "g", "login_attempts = 1000\nlogin_account_attempts = 1000\n",
                        job_worker=False) as server:
        _login_attempt(server.url, "admin", "warm-up")
        known, unknown = [], []
        for i in range(7):
            known.append(_login_attempt(server.url, "admin", f"wrong-{i}")[1])
            unknown.append(_login_attempt(server.url, f"nobody-{i}", f"wrong-{i}")[1])
    assert statistics.median(unknown) > 0.5 * statistics.median(known), (known, unknown)


def test_parallel_tries_cannot_check_more_passwords_than_the_limit(tmp_path):
    with start_gunicorn(tmp_path / "g", "login_attempts = 5\n", job_worker=False) as server:
        # the CSRF cookie/token pairs first, then 30 password tries at once
        sessions = []
        for _ in range(30):
            s = requests.Session()
            s.csrf = csrf_of(s.get(f"{server.url}/login", timeout=30).text)
            sessions.append(s)

        def attempt(s):
            return s.post(f"{server.url}/login", data={"username": "admin", "password": "guess", "csrf_token": s.csrf},
                          allow_redirects=False, timeout=120).status_code

        with ThreadPoolExecutor(30) as pool:
            codes = list(pool.map(attempt, sessions))
    assert codes.count(401) <= 5 and codes.count(401) + codes.count(429) == 30, codes


def test_behind_a_configured_proxy_an_attacker_locks_out_only_itself(tmp_path):
    with start_gunicorn(tmp_path / "g", "trusted_proxies = 1\n", job_worker=False) as server:
        attacker, admin = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.2"}
        codes = [_login_attempt(server.url, "admin", "guess", attacker)[0] for _ in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429], codes
        s, r = web_login(server.url, headers=admin)
        assert r.status_code == 302 and s.get(f"{server.url}/", timeout=30).status_code == 200


def test_without_a_configured_proxy_forwarded_headers_do_not_evade_the_limit(tmp_path):
    with start_gunicorn(tmp_path / "g", job_worker=False) as server:
        codes = [_login_attempt(server.url, "admin", "guess", {"X-Forwarded-For": f"203.0.113.{i}"})[0]
                 for i in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429], codes


def test_the_right_password_after_a_success_is_not_counted(web):
    """Successful logins are not failures: logging in more often than the limit works."""
    for _ in range(7):
        _, r = web_login(web.url, password=PASSWORD)
        assert r.status_code == 302
