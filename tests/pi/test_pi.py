"""The edge on Debian arm64 under qemu-user (`make test-pi`; tools/pi/check.py does the work, docs/pi.md the why).

Per root (bookworm = Raspberry Pi OS's base with Python 3.11, trixie with Python 3.13): the package's wheel with
its `edge` extra from PyPI wheels only and no TensorFlow, `edge-agent check` against a real broker and influxd,
the four bundles forecasting through the agent's inference code with the interpreter it picks (and the same
forecasts as on this host, within one int8 step), and a short ingest run counted exactly. In bookworm,
tflite-runtime 2.14 runs every bundle and single-op models of their ops, each in its own process, and what it
does must be what docs/pi.md says.

Opt-in (HOME_ENERGY_TEST_PI=1, set by `make test-pi`, which also installs debootstrap and qemu-user-static): it is
not part of `make test` (docs/pi.md: what it costs). Runs only as root. The roots are cached in build/.
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
    pytest.mark.skipif(os.environ.get("HOME_ENERGY_TEST_PI") != "1",
                       reason="opt-in, minutes of emulation: `make test-pi` (or HOME_ENERGY_TEST_PI=1)"),
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


# What tflite-runtime 2.14 does on aarch64 (docs/pi.md): int8 FULLY_CONNECTED with per-channel weights (what
# TensorFlow 2.21 exports by default) and more than one input row dies with SIGSEGV — a NULL load in its NEON
# kernel, with or without XNNPACK; per-tensor weights, one row and every other op of the bundles run. The day-ahead
# bundles apply Dense layers over the 96-step window, so training exports their Dense weights per tensor, and all
# four bundles run; the agent's guard refuses exactly the models that would crash. If this changes (a new export, a
# fixed runtime), update docs/pi.md and the README's interpreter table.
TFLITE_RUNTIME_ARM64 = {
    "cnn-1": "ok", "lstm-1": "ok", "cnn-96": "ok", "lstm-96": "ok",
    "fully_connected_3d": "signal 11", "fully_connected_rows2": "signal 11",
    "fully_connected_3d_per_tensor": "ok", "fully_connected_rows2_per_tensor": "ok", "fully_connected_2d": "ok",
    "conv_2d": "ok", "softmax": "ok", "mul": "ok", "sub": "ok", "reshape": "ok",
}


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("suite, python", [("bookworm", "3.11"), ("trixie", "3.13")])
def test_edge_installs_forecasts_and_ingests_on_arm64(suite, python, seed_bundles):
    doc = run_check("--suites", suite, "--bundles", str(seed_bundles))
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
    if suite == "bookworm":  # tflite-runtime has no wheel for Python 3.13
        probe = res["tflite_runtime"]
        assert probe["ops"]["fully_connected_3d"]["dense_weight_scales"] == [18]
        assert probe["ops"]["fully_connected_3d_per_tensor"]["dense_weight_scales"] == [1]
        assert probe["xnnpack"] == TFLITE_RUNTIME_ARM64 and probe["builtin"] == TFLITE_RUNTIME_ARM64
        agent = probe["agent_forecast"]
        assert agent["interpreter"]["name"] == "tflite-runtime" and agent["missing"] == []
        assert agent["max_diff_vs_host_lsb"] <= 1
        crashing = {name for name, status in TFLITE_RUNTIME_ARM64.items() if status != "ok"}
        assert {name for name, refused in probe["refused_by_guard"].items() if refused} == crashing
