"""Shared fixtures: a real Mosquitto and a real influxd on free loopback ports."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tools.services import Influxd, Mosquitto

ROOT = Path(__file__).resolve().parent.parent

# Fixtures that live in helper modules: the server's key pair, signed bundles, an agent with the model API.
pytest_plugins = ["tests.helpers.models"]


_MAIN_PID = os.getpid()


def _terminate_like_ctrl_c(signum, frame):
    """A run stopped with SIGTERM (`timeout`, CI cancelling) tears its fixtures down like Ctrl-C would, so no
    broker, database or gunicorn is left running. A forked child (a multiprocessing worker) just exits."""
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
ARTEFACTS = ROOT / "artefacts"


@pytest.fixture(scope="session")
def artefacts_dir() -> Path:
    """Where tests keep files worth looking at afterwards (screenshots, logs)."""
    ARTEFACTS.mkdir(exist_ok=True)
    return ARTEFACTS


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory):
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture(scope="session")
def influxd_session(tmp_path_factory):
    with Influxd(tmp_path_factory.mktemp("influxd")) as db:
        yield db


@pytest.fixture
def mosquitto(tmp_path):
    """A fresh broker per test (for tests that stop or restart it)."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def influxd(tmp_path):
    """A fresh influxd per test (for tests that stop or restart it)."""
    with Influxd(tmp_path / "influxd") as db:
        yield db


@pytest.fixture
def influx_db_name(influxd_session, request) -> str:
    """A new, empty database on the session influxd, named after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    influxd_session.query(f'DROP DATABASE "{name}"', method="POST")
    influxd_session.create_database(name)
    return name


SEED_CSV = ROOT / "data" / "seed_house" / "raw_data.csv"


@pytest.fixture(scope="session")
def seed_bundles(tmp_path_factory) -> Path:
    """The four bundles (cnn-1, lstm-1, cnn-96, lstm-96) trained quickly on a slice of the real data.

    Trained once per session with `python -m training train --quick` (a real, loadable int8 model that is not
    meant to be accurate). Directory DIR/<name>/{manifest.json, model.tflite}."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("bundles")
    r = subprocess.run([sys.executable, "-m", "training", "train", "--data", str(SEED_CSV),
                        "--until", "2023-05-10T00:00:00Z", "--out", str(out), "--quick"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def influxdb_v2():
    """Connection facts of a real InfluxDB 2.x server, or skip with the reason."""
    url, token = os.environ.get("INFLUXDB_V2_URL"), os.environ.get("INFLUXDB_V2_TOKEN")
    if not (url and token):
        pytest.skip("no InfluxDB 2.x server here: set INFLUXDB_V2_URL and INFLUXDB_V2_TOKEN "
                    "(and optionally INFLUXDB_V2_ORG, INFLUXDB_V2_BUCKET) to run the 2.x tests")
    return {"url": url, "token": token, "org": os.environ.get("INFLUXDB_V2_ORG", "home"),
            "bucket": os.environ.get("INFLUXDB_V2_BUCKET", "energy")}
