"""The house's outdoor temperature in the server's trainings, on a real influxd: a pull fetches the agent's
`weather_slots` (measured first, the forecast where no measured value) beside the energy CSV; a training job passes
it to the training when it covers enough of the training days (server.temperature) and the registry shows the
weather bundles it returns; with too little of it recorded the job trains as without and says why."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from server import temperature
from shared import weather as wx
from shared.points import Point
from shared.schema import SLOT_NS, WEATHER_SLOTS
from shared.series import SlotSeries
from shared.storage import StorageConfig, open_storage
from tests.helpers.server import AUTH, job_finished
from training.weather import load_temperature

T0 = datetime(2023, 1, 2, tzinfo=UTC)
T0_NS = int(T0.timestamp() * 1e9)


def house(days: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A heated house: per slot (ending T0 + 15 min · i) the meter's counter (kWh) and the outdoor °C. Each day's
    mean temperature is drawn independently, and the heating follows it (0.9 kWh per degree below 18 °C)."""
    rng = np.random.default_rng(seed)
    n = days * 96
    i = np.arange(n)
    t_day = rng.uniform(-6, 16, days)[i // 96]
    hour = (i % 96) / 4
    shape = 1 + 0.6 * np.sin((hour - 6) / 24 * 2 * np.pi)
    kwh = 0.08 * shape + np.maximum(0, 18 - t_day) * 0.9 / 96 * shape
    return 1000 + np.cumsum(kwh), t_day + 3 * np.sin((hour - 9) / 24 * 2 * np.pi)


def write_house(url: str, db: str, days: int, weather_from_day: int | None = 0) -> np.ndarray:
    """The meter's readings and, from `weather_from_day` on (None: never), the agent's weather_slots as it writes
    them: every slot's forecast, and a measured value for most slots (not every 7th) that differs from it."""
    counter, temp = house(days)
    ends = T0_NS + SLOT_NS * np.arange(len(counter), dtype=np.int64)
    points = [Point("EnergyMeter", {}, {"EnergyIn": float(v)}, int(t)) for t, v in zip(ends, counter, strict=True)]
    if weather_from_day is not None:
        for k in range(weather_from_day * 96, len(ends)):
            points.append(Point(WEATHER_SLOTS, {"source": "forecast"}, {"temperature_c": round(temp[k] + 0.5, 3)},
                                int(ends[k])))
            if k % 7:
                points.append(Point(WEATHER_SLOTS, {"source": "measured"}, {"temperature_c": round(temp[k], 3)},
                                    int(ends[k])))
    st = open_storage(StorageConfig(url=url, database=db))
    try:
        st.write(points)
    finally:
        st.close()
    return temp


def add_node(c, url: str, db: str, name: str = "pi") -> dict:
    return c.post("/api/v1/nodes", headers=AUTH, json={
        "name": name, "api_url": "http://127.0.0.1:9", "api_token": "t" * 20,
        "influx": {"version": 1, "url": url, "database": db}}).json


def pull(c, node: dict, days: int, start_day: int = 0) -> dict:
    job = c.post(f"/api/v1/nodes/{node['id']}/pull", headers=AUTH, json={
        "start": (T0 + timedelta(days=start_day)).isoformat(), "end": (T0 + timedelta(days=days)).isoformat()}).json
    job = job_finished(c, job, timeout=60)
    assert job["state"] == "done", job
    return job


def test_a_pull_fetches_the_outdoor_temperature_beside_the_energy(app, worker, influxd_session, influx_db_name):
    c = app.test_client()
    temp = write_house(influxd_session.url, influx_db_name, 10)
    node = add_node(c, influxd_session.url, influx_db_name)
    job = pull(c, node, 10)
    energy, got = Path(job["result"]["file"]), job["result"]["temperature"]
    f = Path(got["file"])
    assert f.parent == energy.parent and f.name == energy.stem + ".temperature.csv"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert got["slots"] == 10 * 96 and got["measured"] == sum(1 for k in range(10 * 96) if k % 7)
    assert f"outdoor temperature: {10 * 96} slots" in job["log"]
    # what the training reads (training.weather.load_temperature): every slot's value exactly, measured first
    record = load_temperature(f)
    want = np.array([temp[k] if k % 7 else temp[k] + 0.5 for k in range(10 * 96)]).round(3)
    np.testing.assert_allclose(record.window(T0_NS + SLOT_NS * (10 * 96 - 1), 10 * 96), want, atol=1e-9)
    # retention keeps a pull's temperature with its pull: three pulls, three of each
    for day in (1, 2, 3):
        job = pull(c, node, 10, start_day=day)
    assert len(list(energy.parent.glob("*.temperature.csv"))) == 3
    assert len(list(energy.parent.glob("*.csv"))) == 6 and not f.exists()
    assert "retention: deleted 1 older pulls" in job["log"]


def test_a_house_without_weather_slots_pulls_as_before(app, worker, influxd_session, influx_db_name):
    c = app.test_client()
    write_house(influxd_session.url, influx_db_name, 3, weather_from_day=None)
    job = pull(c, add_node(c, influxd_session.url, influx_db_name), 3)
    assert "temperature" not in job["result"] and job["result"]["rows"] == 3 * 96
    assert list(Path(job["result"]["file"]).parent.glob("*.temperature.csv")) == []
    assert "outdoor temperature: none recorded (weather_slots)" in job["log"]
    chosen = temperature.choose(job["result"], SlotSeries(T0_NS, np.ones(3 * 96)), {}, None)
    assert chosen.file is None and "recorded none" in chosen.note


def test_coverage_counts_the_training_days_with_a_days_worth_of_temperature():
    energy = SlotSeries(T0_NS, np.ones(10 * 96))
    temp = np.full(10 * 96, 5.0)
    temp[:3 * 96] = np.nan  # three days unknown
    temp[5 * 96:5 * 96 + 50] = np.nan  # a day with 46 of 96 slots: less than half
    assert temperature.coverage(energy, SlotSeries(T0_NS, temp), "UTC") == (6, 10)
    # local days: Zurich's midnight is 23:00 UTC, so the first UTC day's last hour opens a local day
    assert temperature.coverage(energy, SlotSeries(T0_NS, np.full(10 * 96, 5.0)), "Europe/Zurich")[0] == 10
    assert temperature.house_timezone({}, {"calendar": {"timezone": "Europe/Berlin",
                                                        "weather_timezone": "Europe/Zurich"}}) == "Europe/Zurich"
    assert temperature.house_timezone({}, None) == "UTC"


@pytest.mark.parametrize("day, known", [("2023-03-26", 47), ("2023-10-29", 49)])
def test_coverage_counts_a_dst_day_as_the_training_does(day, known):
    """A day counts with half of *its* slots known, as the training's day means count it (shared.weather.day_means):
    the 23-hour day of spring has 92 slots (47 known: counted), the 25-hour day of autumn 100 (49: not counted)."""
    tz = "Europe/Zurich"
    start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1e9) - 3 * 86400 * 10**9
    n = 7 * 96
    energy = SlotSeries(start, np.ones(n))
    days = wx.local_day(energy.end_ns, tz)
    the_day = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) // 86400
    temp = np.full(n, 4.0)
    on_day = np.flatnonzero(days == the_day)
    temp[on_day[known:]] = np.nan
    record = SlotSeries(start, temp)
    def with_mean(series: SlotSeries) -> set[int]:
        means = wx.day_means(series, int(days.min()), int(days.max()), tz)
        return {int(days.min()) + i for i in np.flatnonzero(np.isfinite(means))}

    assert (the_day in with_mean(record)) == (known * 2 >= len(on_day)) == (len(on_day) == 92)
    assert temperature.coverage(energy, record, tz) == (len(with_mean(energy) & with_mean(record)),
                                                        len(with_mean(energy)))


def _train(c, node: dict) -> dict:
    job = c.post(f"/api/v1/nodes/{node['id']}/train", headers=AUTH, json={"quick": True, "keep_weather": True}).json
    job = job_finished(c, job, timeout=240, interval=0.5)
    assert job["state"] == "done", job
    return job


@pytest.mark.parametrize("weather_from_day", [0, 50])
def test_a_training_job_takes_the_temperature_when_the_house_recorded_enough(app, logged_in, worker, influxd_session,
                                                                             influx_db_name, weather_from_day,
                                                                             tmp_path):
    """70 days: all with the temperature → the weather bundles train and are registered, declaring the input;
    the last 20 only (< 80 %) → trained as without, and the job says so."""
    c = app.test_client()
    write_house(influxd_session.url, influx_db_name, 70, weather_from_day)
    node = add_node(c, influxd_session.url, influx_db_name)
    pull(c, node, 70)
    job = _train(c, node)
    s = app.extensions["home_energy"]
    versions = {v["name"]: v for v in c.get("/api/v1/models", headers=AUTH).json["versions"]}
    if weather_from_day == 0:
        assert "with outdoor temperature: 70 of 70 days recorded" in job["log"], job["log"]
        assert job["result"]["temperature"]["used"] is True
        assert set(job["result"]["versions"]) >= {"cnn-96-weather", "lstm-96-weather"}
        for name in ("cnn-96-weather", "lstm-96-weather"):
            assert versions[name]["uses_temperature"] is True
            row = s.registry.get(f"node:{node['id']}", name, job["result"]["versions"][name])
            doc = json.loads((Path(row["path"]) / "manifest.json").read_text())
            assert "temp_day" in doc["window"]["features"] and doc["window"]["weather"]["timezone"] == "UTC"
            assert "ship" in doc["metrics"]["weather"]  # the training's rule judged it
        assert versions["cnn-96"]["uses_temperature"] is False
        page = logged_in.get(f"/nodes/{node['id']}").get_data(as_text=True)
        assert page.count("uses outdoor temperature</small>") == 2  # next to the two weather bundles
        _gate_compares_weather_bundles(s, node, job, tmp_path)
    else:
        # 20 of 70 days, and the first of them only partly: the pull starts at the first slot's end
        assert "without outdoor temperature: only 20 of 70 days recorded (needs 80%)" in job["log"], job["log"]
        assert job["result"]["temperature"]["used"] is False
        assert set(job["result"]["versions"]) == {"cnn-1", "lstm-1", "cnn-96", "lstm-96"}
        assert not any(v["uses_temperature"] for v in versions.values())


def _gate_compares_weather_bundles(s, node: dict, job: dict, tmp_path: Path) -> None:
    """The push gate gives a weather bundle the pulled temperature record: it and the active version of its name are
    compared (before, both had "no complete forecast" without it, and every later weather version was held)."""
    import shutil

    from server import nodes
    from server.registry import node_owner
    from shared import manifest as mf
    from shared.series import iso, parse_time_ns
    from training.data import load

    owner, name = node_owner(node["id"]), "cnn-96-weather"
    new = s.registry.get(owner, name, job["result"]["versions"][name])
    last = s.db.last_pull(node["id"])
    series = load([last["file"]])
    gate_temp = temperature.as_forecasts(last["temperature"]["file"], "UTC")
    assert gate_temp is not None
    start = parse_time_ns(new["data"]["end"]) - 6 * 86400 * 10**9
    assert nodes.recent_mae(Path(new["path"]), series, start)[1] == 0  # without the record: nothing complete
    mae, n = nodes.recent_mae(Path(new["path"]), series, start, gate_temp)
    assert n >= 4 and np.isfinite(mae)

    def copy(tag: str, extra: bytes) -> dict:
        """The same network as another version trained until 5 days before the end (other bytes, other sha)."""
        dst = tmp_path / f"{name}-{tag}"
        shutil.copytree(new["path"], dst)
        model = dst / mf.MODEL_FILE
        model.write_bytes(model.read_bytes() + extra)
        doc = json.loads((dst / mf.MANIFEST_FILE).read_text())
        doc["model"] |= {"sha256": mf.sha256_file(model), "bytes": model.stat().st_size}
        doc["data"]["end"] = iso(parse_time_ns(new["data"]["end"]) - 5 * 86400 * 10**9)
        (dst / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))
        return s.registry.add_run([dst], owner)[0]

    active, candidate = copy("active", b"\0" * 16), copy("new", b"\0" * 32)
    status = {"models": {name: {"active": {"version": active["version"], "sha256": active["sha256"],
                                           "activated_at": "2023-03-01T00:00:00Z"}}}}
    ok, why = nodes.gate(s.registry, status, candidate, series)
    assert not ok and why.code == "no_forecast", why
    ok, why = nodes.gate(s.registry, status, candidate, series, gate_temp)
    assert ok and why.code == "passed", why  # the same network: equal MAE on the 5 unseen days


def test_a_pulled_temperature_file_outside_the_data_areas_is_read_by_nothing(app, tmp_path):
    """The pull's temperature file passes the energy file's check (server.datafiles); one that fails it (here a
    symlink out of the cache) is dropped with the reason: neither the training nor the push gate gets its path."""
    from server import actions, jobs

    s = app.extensions["home_energy"]
    node = add_node(app.test_client(), "http://127.0.0.1:9", "energy")
    folder = s.config.cache_dir / f"node-{node['id']}"
    folder.mkdir(parents=True, exist_ok=True)
    energy = folder / "a-b.csv"
    energy.write_text("time,value\n2023-01-02T00:15:00Z,1.0\n2023-01-02T00:30:00Z,1.5\n")
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("time,value\n2023-01-02T00:07:30Z,4.0\n")
    (folder / "a-b.temperature.csv").symlink_to(outside)
    jid = s.db.add_job(node["id"], "pull", {})
    s.db.job_update(jid, state="done", result={"file": str(energy), "rows": 2, "temperature": {
        "file": str(folder / "a-b.temperature.csv"), "slots": 1}})
    files, pulled = jobs.Worker(s)._data_files(jid, node["id"], {})
    assert files == [str(energy.resolve())]
    assert "file" not in pulled["temperature"] and "outside the training data" in pulled["temperature"]["error"]
    assert temperature.choose(pulled, SlotSeries(T0_NS, np.ones(96)), {}, None).file is None
    series, gate_temp = actions._recent_series(s, node, None)  # a manual push's gate: the same check
    assert series is not None and gate_temp is None


def test_a_failed_temperature_query_leaves_no_earlier_file_behind(tmp_path):
    """A pull of a range pulled before whose temperature query fails (here: nothing listens on the database's port)
    must not leave the earlier pull's temperature file beside the new energy file, where it would pass for this
    pull's (retention and a reader by name, server.pull.temperature_file)."""
    from server.pull import pull_temperature, temperature_file
    from tools.services import free_port

    url = f"http://127.0.0.1:{free_port()}"
    energy = tmp_path / "20230102T0000-20230112T0000.csv"
    old = temperature_file(energy)
    old.write_text("time,value\n2023-01-02T00:07:30.000Z,1.0\n")
    st = open_storage(StorageConfig(url=url, database="db", timeout_s=2.0))
    try:
        with pytest.raises(ValueError):
            pull_temperature(st, url, T0, T0 + timedelta(days=10), old)
    finally:
        st.close()
    assert not old.exists()
    assert temperature.as_forecasts(temperature_file(energy), "UTC") is None


def test_the_gate_forecasts_with_the_rules_error(tmp_path):
    """The gate's temperature forecast is the record + the shipping rule's N(0, 1.5 °C) per local day (the edge gets
    a forecast, not the record), the same on every call: both versions it compares see the same forecast."""
    from server.pull import temperature_file

    days = 120
    ends = T0_NS + SLOT_NS * np.arange(days * 96, dtype=np.int64)
    record = temperature_file(tmp_path / "a-b.csv")
    record.write_text("time,value\n" + "".join(
        f"{datetime.fromtimestamp((t - SLOT_NS // 2) / 1e9, UTC).isoformat().replace('+00:00', 'Z')},5.0\n"
        for t in ends))
    fc = temperature.as_forecasts(record, "Europe/Zurich")
    err = fc.forecast.values - fc.observed.values
    assert np.allclose(fc.observed.values[:days * 96], 5.0)
    per_day = err[:days * 96].reshape(days, 96)[1:-1, 8:-8]  # whole local days, off the day boundaries
    assert np.allclose(per_day, per_day[:, :1], atol=1e-9)  # one error per local day
    assert 1.2 < per_day[:, 0].std() < 1.8 and abs(per_day[:, 0].mean()) < 0.4
    again = temperature.as_forecasts(record, "Europe/Zurich")
    np.testing.assert_array_equal(again.forecast.values, fc.forecast.values)
