"""The edge on Debian arm64 under qemu-user (`make test-pi`; tools/pi/check.py does the work, docs/pi.md the why).

Per root (bookworm = Raspberry Pi OS's base with Python 3.11, trixie with Python 3.13): the package's wheel with
its `edge` extra from PyPI wheels only and no TensorFlow, `edge-agent check` against a real broker and influxd,
the four bundles forecasting through the agent's inference code with the interpreter it picks (and the same
forecasts as on this host, within one int8 step), and a short ingest run counted exactly. In bookworm,
tflite-runtime 2.14 runs every bundle and single-op models of their ops, each in its own process, and what it
does must be what docs/pi.md says.

Runs only as root with debootstrap and qemu-user-static (`make test-pi` installs them); HOME_ENERGY_TEST_PI=0 skips.
The roots are cached in build/ (the first run builds them: minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QEMU = Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")

pytestmark = [
    pytest.mark.skipif(os.environ.get("HOME_ENERGY_TEST_PI", "1") == "0", reason="HOME_ENERGY_TEST_PI=0"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the arm64 roots need root (debootstrap, chroot, mount)"),
    pytest.mark.skipif(not (shutil.which("debootstrap") or Path("/usr/sbin/debootstrap").exists()),
                       reason="debootstrap not installed (make test-pi installs it)"),
    pytest.mark.skipif(not (QEMU.exists() or shutil.which("qemu-aarch64-static")),
                       reason="qemu-user-static not installed (make test-pi installs it with binfmt-support)"),
]


def run_check(*args: str, timeout: float = 2400) -> dict:
    r = subprocess.run([sys.executable, "-m", "tools.pi.check", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stdout.strip().splitlines()
    assert lines, f"no result (exit {r.returncode}): {r.stderr[-6000:]}"
    doc = json.loads(lines[-1])
    print(json.dumps(doc, indent=1))  # the figures, for -s and for the log of a failure
    assert r.returncode == 0 and doc["problems"] == [], (doc["problems"], r.stderr[-4000:])
    return doc


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("suite, python", [("bookworm", "3.11"), ("trixie", "3.13")])
def test_edge_installs_forecasts_and_ingests_on_arm64(suite, python, seed_bundles):
    doc = run_check("--suites", suite, "--bundles", str(seed_bundles), "--no-tflite-runtime")
    res = doc["suites"][suite]
    assert res["machine"] == "aarch64" and res["python"].startswith(python + ".")
    wheels = {k.lower(): v for k, v in res["wheels"].items()}
    assert "ai-edge-litert" in wheels and "home-energy" in wheels and "paho-mqtt" in wheels
    assert not any(k.startswith(("tensorflow", "keras", "tf-", "tf_")) for k in wheels)
    assert res["interpreter"]["name"] == "ai-edge-litert"
    assert set(res["forecast"]["models"]) == {"cnn-1", "lstm-1", "cnn-96", "lstm-96"}
    assert res["forecast"]["max_diff_vs_host_lsb"] <= 1
    assert res["check"]["exit_code"] == 0
    ingest = res["ingest"]
    assert ingest["stored"] == ingest["distinct_values"] == ingest["messages"] >= 300 and ingest["exit_code"] == 0
