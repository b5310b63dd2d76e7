"""Jobs: history pull from a real influxd with progress and a cached file, atomic claims across workers,
scheduled retrains."""

from __future__ import annotations

import contextlib
import csv
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server import jobs
from shared.points import Point
from shared.storage import StorageConfig, open_storage
from tests.helpers.server import AUTH, job_finished


def test_history_pull_from_the_nodes_influxdb(app, worker, influxd_session, influx_db_name):
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    t0 = datetime(2023, 3, 1, tzinfo=UTC)
    st.write([Point("EnergyMeter", {"device_id": "meter-1"}, {"EnergyIn": 100 + 0.25 * i},
                    int((t0 + timedelta(minutes=15 * i)).timestamp() * 1e9)) for i in range(20 * 96)])
    c = app.test_client()
    node = c.post("/api/v1/nodes", headers=AUTH, json={
        "name": "pi", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
        "influx": {"version": 1, "url": influxd_session.url, "database": influx_db_name,
                   "measurement": "EnergyMeter", "field": "EnergyIn", "tags": {"device_id": "meter-1"}}}).json
    job = c.post(f"/api/v1/nodes/{node['id']}/pull", headers=AUTH,
                 json={"start": "2023-03-01T00:00:00Z", "end": "2023-03-15T00:00:00Z"}).json
    seen = set()
    for _ in range(200):
        job = c.get(f"/api/v1/jobs/{job['id']}", headers=AUTH).json
        seen.add(job["percent"])
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["state"] == "done", job
    rows = list(csv.DictReader(open(job["result"]["file"])))  # noqa: SIM115
    assert job["result"]["rows"] == len(rows) == 14 * 96
    assert rows[0] == {"time": "2023-03-01T00:00:00Z", "value": "100.0"}
    assert "influx" in node and "password" not in node["influx"]
    # retention: the house keeps its newest keep_pulls (3) pulled files
    first = Path(job["result"]["file"])
    for day in (2, 3, 4):
        job = c.post(f"/api/v1/nodes/{node['id']}/pull", headers=AUTH,
                     json={"start": f"2023-03-0{day}T00:00:00Z", "end": "2023-03-15T00:00:00Z"}).json
        job = job_finished(c, job, timeout=20)
        assert job["state"] == "done", job
    assert not first.exists() and len(list(first.parent.glob("*.csv"))) == 3
    assert "retention: deleted 1 older pulls" in job["log"] and Path(job["result"]["file"]).exists()


def test_a_job_is_claimed_by_one_worker_only(app):
    s = app.extensions["home_energy"]
    ids = [jobs.enqueue(s.db, None, "train", {"n": i}) for i in range(20)]
    claimed: list[int] = []
    lock = threading.Lock()

    def claim(name):
        from server.db import Database

        db = Database(s.config.db_path)  # its own connection, like another process
        while (job := db.claim_job(name)) is not None:
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids  # each exactly once


def test_scheduled_retrain_is_queued_once(app):
    s = app.extensions["home_energy"]
    c = app.test_client()
    node = c.post("/api/v1/nodes", headers=AUTH, json={"name": "pi", "api_url": "http://127.0.0.1:9",
                                                        "api_token": "t" * 20, "retrain_days": 7}).json
    w = jobs.Worker(s)
    w.schedule_retrains()
    w.schedule_retrains()  # still queued: not duplicated
    rows = s.db.all("SELECT * FROM jobs WHERE node_id=?", node["id"])
    assert len(rows) == 1 and rows[0]["kind"] == "train" and '"scheduled": true' in rows[0]["params"]


def test_a_pull_from_a_foreign_url_shows_nothing_of_its_answer(app, worker):
    """A node's InfluxDB URL that points at another service: the job fails without echoing its answer."""
    from tests.helpers.server import ForeignService

    c = app.test_client()
    for status, body in ((500, b'{"error": "TOPSECRET from the LAN"}'), (200, b'{"results": [{"error": "TOPSECRET"}]}'),
                         (401, b"TOPSECRET page")):
        foreign = ForeignService(status, body)
        try:
            node = c.post("/api/v1/nodes", headers=AUTH, json={
                "name": f"pi-{status}-{len(body)}", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
                "influx": {"version": 1, "url": foreign.url, "database": "energy"}}).json
            job = c.post(f"/api/v1/nodes/{node['id']}/pull", headers=AUTH,
                         json={"start": "2023-03-01T00:00:00Z", "end": "2023-03-02T00:00:00Z"}).json
            job = job_finished(c, job, timeout=20)
            assert job["state"] == "failed" and "TOPSECRET" not in str(job), job
            assert "InfluxDB" in job["error"]
        finally:
            foreign.close()


def test_pulled_files_are_private(app, worker, influxd_session, influx_db_name):
    import stat

    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    t0 = datetime(2023, 3, 1, tzinfo=UTC)
    st.write([Point("EnergyMeter", {}, {"EnergyIn": 1.0 + i}, int((t0 + timedelta(minutes=15 * i)).timestamp() * 1e9))
              for i in range(96)])
    c = app.test_client()
    node = c.post("/api/v1/nodes", headers=AUTH, json={"name": "pi", "api_url": "http://127.0.0.1:9",
                                                        "api_token": "t" * 20, "influx": {
                                                            "url": influxd_session.url, "database": influx_db_name}}).json
    job = c.post(f"/api/v1/nodes/{node['id']}/pull", headers=AUTH,
                 json={"start": "2023-03-01T00:00:00Z", "end": "2023-03-02T00:00:00Z"}).json
    job = job_finished(c, job, timeout=20)
    assert job["state"] == "done", job
    f = Path(job["result"]["file"])
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700 and stat.S_IMODE(f.parent.parent.stat().st_mode) == 0o700


def test_a_scheduled_retrain_pulls_the_last_pull_days_itself(app, worker, influxd_session, influx_db_name):
    """A scheduled retrain queues `pull_days`: the job pulls that many days up to now from the node's InfluxDB and
    trains on them (it used to ignore `pull_days` and fail with "no data: pull history first" on a node that had
    never been pulled by hand, or train on an old manual pull)."""
    st = open_storage(StorageConfig(url=influxd_session.url, database=influx_db_name))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    t0 = now - timedelta(days=70)
    st.write([Point("EnergyMeter", {}, {"EnergyIn": 100 + 0.25 * i}, int((t0 + timedelta(minutes=15 * i)).timestamp()
                                                                          * 1e9)) for i in range(70 * 96)])
    s = app.extensions["home_energy"]
    c = app.test_client()
    node = c.post("/api/v1/nodes", headers=AUTH, json={
        "name": "pi", "api_url": "http://127.0.0.1:9", "api_token": "t" * 20, "retrain_days": 7,
        "influx": {"url": influxd_session.url, "database": influx_db_name}}).json
    jobs.Worker(s).schedule_retrains()
    job = s.db.one("SELECT * FROM jobs WHERE node_id=?", node["id"])
    for _ in range(600):  # until the training itself runs (a full one: cancelled below) or the job ends
        job = c.get(f"/api/v1/jobs/{job['id']}", headers=AUTH).json
        if job["state"] not in ("queued", "running") or job["stage"].startswith(("training", "cnn", "lstm")):
            break
        time.sleep(0.1)
    assert job["state"] == "running", job
    pulled = sorted((s.config.cache_dir / f"node-{node['id']}").glob("*.csv"))
    assert len(pulled) == 1, pulled
    rows = list(csv.DictReader(open(pulled[0])))  # noqa: SIM115
    first = datetime.fromisoformat(rows[0]["time"].replace("Z", "+00:00"))
    assert now - timedelta(days=60, minutes=15) <= first <= now - timedelta(days=59, hours=23)
    assert 59 * 96 <= len(rows) <= 60 * 96 + 1
    assert pulled[0].name in job["log"]  # what the training was given
    c.post(f"/api/v1/jobs/{job['id']}/cancel", headers=AUTH)
    for _ in range(300):
        if c.get(f"/api/v1/jobs/{job['id']}", headers=AUTH).json["state"] == "cancelled":
            break
        time.sleep(0.1)
    assert c.get(f"/api/v1/jobs/{job['id']}", headers=AUTH).json["state"] == "cancelled"


def test_the_web_side_never_loads_ray(tmp_path):
    """Ray is heavy (seconds to start, hundreds of MB): the page and the API workers never import it."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = f"""
import sys
from werkzeug.security import generate_password_hash
from server import create_app
from server.config import load_config
import server.jobs, server.cluster
app = create_app(load_config(None, data_dir={str(tmp_path / 'd')!r}, admin_password_hash=generate_password_hash('x')))
assert app.test_client().get('/login').status_code == 200
print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_embedded_ray_starts_lazily_and_listens_on_loopback_only(app):
    """The job worker's Ray: not running until a training needs it; then bound to 127.0.0.1 only, with token
    authentication and no usage statistics; gone when the worker stops."""
    import os

    import psutil

    w = jobs.Worker(app.extensions["home_energy"])
    assert not w.cluster.started and w.cluster.capacity() == 1
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}  # the session's broker and database, say
    try:
        ray = w.cluster.ensure()
        assert ray.cluster_resources()["CPU"] == os.cpu_count() and w.cluster.capacity() == os.cpu_count()
        procs = [p for p in me.children(recursive=True) if p.pid not in before]
        assert procs  # raylet, GCS, …: children of this process
        listening = {c.laddr.ip for p in procs for c in p.net_connections(kind="inet") if c.status == "LISTEN"}
        listening |= {c.laddr.ip for c in me.net_connections(kind="inet") if c.status == "LISTEN"}
        assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
        assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
        token = w.cluster.data_dir / "ray" / "auth_token"
        assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token) and oct(token.stat().st_mode & 0o777) == "0o600"
    finally:
        w.cluster.shutdown()
    assert not w.cluster.started
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            p.wait(30)
    assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_operator_jobs_go_first_then_the_oldest_and_retrains_are_queued_longest_untrained_first(app):
    """Fairness of the queue: a nightly retrain of every house runs in the order it was queued (never trained,
    then longest untrained first); an operator's job does not wait behind it; kinds are claimed separately (pulls
    and trainings have their own limits)."""
    s = app.extensions["home_energy"]
    db = s.db
    c = app.test_client()
    ids = {}
    for name in ("old", "never", "recent"):
        ids[name] = c.post("/api/v1/nodes", headers=AUTH, json={"name": name, "api_url": "http://127.0.0.1:9",
                                                                 "api_token": "t" * 20, "retrain_days": 1}).json["id"]
    for name, age_days in (("old", 9), ("recent", 2)):
        jid = db.add_job(ids[name], "train", {})
        db.job_update(jid, state="done", created=time.time() - age_days * 86400)
    jobs.Worker(s).schedule_retrains()
    manual = jobs.enqueue(db, None, "train", {"data": ["x"]})
    pull = jobs.enqueue(db, None, "pull", {})
    assert db.claim_job("w", ("pull",))["id"] == pull
    order = []
    while (job := db.claim_job("w", ("train",))) is not None:
        order.append(job["node_id"] if job["scheduled"] else "manual")
    assert order == ["manual", ids["never"], ids["old"], ids["recent"]]
    assert manual
