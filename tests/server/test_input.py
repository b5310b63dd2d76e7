"""Wrong types to every API route through real gunicorn: always a 4xx with a JSON error naming the field, never a 500.

The route table below must cover every rule under /api/v1 of the app (checked), so a new route needs an entry."""

from __future__ import annotations

import pytest
import requests

from server import create_app
from tests.helpers.server import API_TOKEN, server_config, start_gunicorn

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
BAD = [None, True, False, 0, -1, 1.5, 10**30, "", "x", "a" * 5000, "\x00", [], [1], ["x"], [None], {}, {"a": 1},
       {"url": 1}]
HUGE = str(10**30)
INFLUX = {"version": 1, "url": "http://127.0.0.1:9", "database": "energy", "username": "u", "password": "p",
          "measurement": "EnergyMeter", "field": "EnergyIn", "tags": {"device_id": "m"}}


def routes(ok_file: str) -> dict[tuple[str, str], dict]:
    """(method, rule) → a valid body (None: the route takes no body)."""
    train = {"data": [ok_file], "until": "2023-05-01T00:00:00Z", "epochs": 2, "quick": True, "auto_push": False}
    return {
        ("GET", "/api/v1/status"): None,
        ("GET", "/api/v1/nodes"): None,
        ("POST", "/api/v1/nodes"): {"name": "fz", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
                                    "influx": INFLUX, "retrain_days": 0},
        ("GET", "/api/v1/nodes/<int:node_id>"): None,
        ("POST", "/api/v1/nodes/<int:node_id>/pull"): {"start": "2023-06-01T00:00:00Z", "end": "2023-06-02T00:00:00Z",
                                                       "measurement": "EnergyMeter", "field": "EnergyIn",
                                                       "tags": {"device_id": "m"}},
        ("POST", "/api/v1/nodes/<int:node_id>/train"): train,
        ("POST", "/api/v1/train"): train,
        ("POST", "/api/v1/nodes/<int:node_id>/push"): {"version": "20260101T000000Z", "names": ["cnn-1"],
                                                       "override": True, "allow_older": False},
        ("POST", "/api/v1/nodes/<int:node_id>/seed"): {"from_group": "default", "version": "20260101T000000Z",
                                                       "names": ["cnn-1"], "override": True, "allow_older": False},
        ("GET", "/api/v1/nodes/<int:node_id>/models"): None,
        ("POST", "/api/v1/nodes/<int:node_id>/rollback"): {"name": "cnn-1"},
        ("GET", "/api/v1/jobs"): None,
        ("GET", "/api/v1/jobs/<int:job_id>"): None,
        ("POST", "/api/v1/jobs/<int:job_id>/cancel"): {},
        ("GET", "/api/v1/models"): None,
        ("GET", "/api/v1/models/<name>/<version>"): None,
    }


def api_rules(tmp_path) -> set[tuple[str, str]]:
    app = create_app(server_config(tmp_path / "rules"))
    return {(m, r.rule) for r in app.url_map.iter_rules() if r.rule.startswith("/api/")
            for m in r.methods - {"HEAD", "OPTIONS"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_gunicorn(tmp_path_factory.mktemp("fuzz"), job_worker=False) as s:
        (s.data_dir / "uploads").mkdir(exist_ok=True)
        ok = s.data_dir / "uploads" / "ok.csv"
        ok.write_text("time,value\n2023-01-01T00:00:00Z,1\n")
        s.ok_file = str(ok)
        yield s


http = requests.Session()  # keep-alive: thousands of requests


def check(r: requests.Response, field: str | None = None) -> None:
    assert r.status_code != 500, (r.request.method, r.request.url, r.request.body and r.request.body[:300], r.text)
    if r.status_code >= 400:
        err = r.json()["error"]
        assert err["code"] and err["message"], r.text
        if field and r.status_code == 400:
            assert err.get("field", "").startswith(field.split(".")[0]), (field, r.text)


def test_every_api_route_answers_wrong_types_with_a_4xx(server, tmp_path):
    table = routes(server.ok_file)
    assert set(table) == api_rules(tmp_path), "add the new API route to the table in this test"
    node = http.post(f"{server.url}/api/v1/nodes", headers=AUTH, timeout=30,
                         json={"name": "target", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
                               "influx": INFLUX}).json()
    job = http.post(f"{server.url}/api/v1/train", headers=AUTH, timeout=30, json={"data": [server.ok_file]}).json()
    args = {"node_id": [str(node["id"]), "0", HUGE], "job_id": [str(job["id"]), HUGE],
            "name": ["cnn-1", "x" * 3000], "version": ["20260101T000000Z", "%00"]}
    n = 0
    for (method, rule), valid in table.items():
        urls = [rule]
        for arg, values in args.items():
            urls = [u.replace(f"<int:{arg}>", v).replace(f"<{arg}>", v) for u in urls for v in values]
        for url in urls:
            full = server.url + url
            # query strings
            for q in ("limit=abc", "limit=-1", f"limit={HUGE}", "limit=1.5", "limit=", "refresh=abc", "refresh=1",
                      "node=abc", "node=0", f"node={HUGE}", "group=NOT%20A%20GROUP", "group=%00", "group="):
                check(http.request(method, f"{full}?{q}", headers=AUTH, timeout=60,
                                       json=valid if valid is not None else None), q.split("=")[0])
            if valid is None:
                continue
            # whole bodies that are not a JSON object
            for raw in (b"not json", b"[]", b'"x"', b"1", b"null", b'{"a": ', b"\xff\xfe"):
                r = http.request(method, full, headers=AUTH | {"Content-Type": "application/json"}, data=raw,
                                     timeout=60)
                check(r)
                if r.status_code == 400:
                    assert r.json()["error"]["field"] == "body", r.text
            check(http.request(method, full, headers=AUTH, data={"a": "b"}, timeout=60))  # a form body
            check(http.request(method, full, headers=AUTH, json=valid | {"unknown_key": 1}, timeout=60),
                  "unknown_key")
            # each field with each wrong type (nested influx fields too)
            fields = [(k, None) for k in valid] + [("influx", k) for k in (valid.get("influx") or {})]
            for key, sub in fields:
                for bad in BAD:
                    doc = dict(valid)
                    if sub is None:
                        doc[key] = bad
                    else:
                        doc[key] = dict(valid[key]) | {sub: bad}
                    if "name" in doc and rule == "/api/v1/nodes" and key != "name":
                        doc["name"] = f"fz-{n}"
                    n += 1
                    check(http.request(method, full, headers=AUTH, json=doc, timeout=60), key)
    assert n > 500


def test_importing_the_console_script_module_runs_nothing():
    """`home-energy-server` imports server.__main__ for its main(); the module ran main() (and sys.exit) at import
    time, so any import of it — a tool, a test, a doc build — started parsing argv and exited."""
    import importlib
    import sys

    sys.modules.pop("server.__main__", None)
    module = importlib.import_module("server.__main__")
    assert callable(module.main)
