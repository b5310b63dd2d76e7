"""Issue 23, item 7: a signed bundle whose model declares a huge tensor. Before, the agent accepted a 64 MiB one
and stayed 64 MiB larger for good, and a 512 MiB one got it killed during the smoke run. Now the declared tensor
bytes are bounded before anything is allocated, and the first load and run happen in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models.sandbox import SandboxError, run_isolated
from shared import manifest as mf
from shared import signing
from shared.agent_client import AgentClient, ApiError
from shared.inference import MAX_TENSOR_BYTES, tensor_entry
from shared.interpreter import runtime
from tests.helpers.agent import ROOT
from tests.helpers.models import TOKEN, sign_copy

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def big_model(seed_bundles, tmp_path_factory) -> tuple[dict, bytes]:
    """cnn-1's manifest with a model of the same input and output that tiles its input to 64 MiB."""
    doc = json.loads((seed_bundles / "cnn-1" / "manifest.json").read_text())
    steps, feats = doc["input"]["shape"][1:]
    out = tmp_path_factory.mktemp("hostile") / "model.tflite"
    r = subprocess.run([sys.executable, "-m", "tests.helpers.hostile_model", str(steps), str(feats),
                        str(64 * MIB), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    data = out.read_bytes()
    interp = runtime().inspect(data)
    doc["input"] = tensor_entry(interp.get_input_details()[0])
    doc["output"] = tensor_entry(interp.get_output_details()[0]) | {"unit": "kWh"}
    doc["model"] = {"file": mf.MODEL_FILE, "sha256": mf.sha256_bytes(data), "bytes": len(data)}
    doc.pop("intervals", None)
    return doc, data


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_a_bundle_declaring_a_64_mib_tensor_is_refused_before_it_is_allocated(agent_with_api, big_model,
                                                                              seed_bundles, server_keys,
                                                                              tmp_path):
    doc, data = big_model
    assert runtime().tensor_bytes(data) > 64 * MIB
    bundle = tmp_path / "cnn-1-big"
    bundle.mkdir()
    (bundle / mf.MODEL_FILE).write_bytes(data)
    (bundle / "manifest.json").write_text(json.dumps(doc | {"version": "20260301T000000Z"}))
    signing.sign_bundle_dir(bundle, server_keys)
    c = AgentClient(agent_with_api.components["api"].url, TOKEN)
    before = _rss_mib()
    with pytest.raises(ApiError) as err:
        c.push(bundle)
    assert err.value.code == "too_large" and "MAX_TENSOR_BYTES" in str(err.value), err.value
    assert _rss_mib() - before < 32  # nothing of the 64 MiB was allocated here
    assert c.status()["models"]["cnn-1"]["active"] is None
    ok = sign_copy(seed_bundles / "cnn-1", tmp_path / "cnn-1-ok", server_keys, "20260302T000000Z")
    assert c.push(ok)["status"] == "active"  # the agent goes on as before


def test_the_smoke_run_fails_in_a_child_process_not_in_the_agent(big_model):
    """Whatever the first load and run do happens in a child: here the tensor bound is lifted and the child's
    address space is too small for the model's arena; the child fails, the caller gets an error and carries on."""
    doc, data = big_model
    x = np.zeros(doc["input"]["shape"], np.float32)
    before = _rss_mib()
    with pytest.raises(SandboxError) as err:
        run_isolated(runtime(), doc, data, x, max_tensor_bytes=1024 * MIB, address_space_bytes=200 * MIB)
    assert err.value.code in ("load_failed", "smoke_failed")
    with pytest.raises(SandboxError, match="MAX_TENSOR_BYTES"):
        run_isolated(runtime(), doc, data, x)  # the default bound, in the child too
    assert MAX_TENSOR_BYTES == 16 * MIB
    y = run_isolated(runtime(), doc, data, x, max_tensor_bytes=1024 * MIB)  # enough room: it runs there
    assert y.shape == (1,) and np.isfinite(y).all()
    assert _rss_mib() - before < 32  # the 64 MiB arena lived in the child
