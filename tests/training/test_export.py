"""The int8 export and the runtimes: day-ahead bundles must run on every interpreter the edge may pick.

tflite-runtime 2.14 on aarch64 dies with SIGSEGV on an int8 FULLY_CONNECTED with per-channel weights over more than
one row (docs/pi.md, measured by `make test-pi`). The export avoids it for new bundles; the edge refuses older ones
on that runtime before their first `invoke` instead of dying. Here with real models in a real interpreter (the
machine and runtime name are what the guard decides on; the crash itself is only reproducible in the arm64 root).
"""

import numpy as np
import pytest

from shared import manifest as mf
from shared.inference import LoadedModel, ModelError
from shared.interpreter import Runtime, per_channel_rows_dense, runtime
from tools.pi.single_ops import dense_weight_scales

AARCH64_TFLITE_RUNTIME = Runtime("tflite-runtime", "2.14.0", runtime("ai-edge-litert").interpreter_class,
                                 machine="aarch64")


@pytest.mark.parametrize("name", ["cnn-96", "lstm-96"])
def test_day_ahead_bundles_quantize_dense_weights_per_tensor(seed_bundles, name):
    content = (seed_bundles / name / "model.tflite").read_bytes()
    scales = dense_weight_scales(content)
    assert scales and set(scales) == {1}, scales  # the blend head's projections, over all 96 steps
    assert not per_channel_rows_dense(runtime("ai-edge-litert").inspect(content))
    LoadedModel.from_dir(seed_bundles / name, AARCH64_TFLITE_RUNTIME)  # not refused


def _day_ahead_exports(bundle, kind: str) -> tuple[dict, bytes, bytes]:
    """One day-ahead graph (untrained: the weights do not matter here) exported as before (per-channel Dense
    weights) and as now, with the bundle's manifest carrying the old export's entries."""
    from training import export
    from training.models import build

    doc = mf.load(bundle)
    spec = mf.window_spec(doc)
    rng = np.random.default_rng(0)
    model = build(kind, spec, batch_size=1)
    calibration = rng.normal(size=(20, spec.steps, spec.n_features))
    old, new = (export.to_int8(model, calibration, per_tensor_dense=p) for p in (False, True))
    return {**doc, **export.manifest_entries(old)}, old, new


@pytest.mark.parametrize("kind", ["cnn", "lstm"])
def test_per_tensor_dense_weights_change_no_output(seed_bundles, kind):
    """The projections are 0/1, so one scale per tensor is exact: both exports answer alike to the last bit."""
    _, old, new = _day_ahead_exports(seed_bundles / f"{kind}-96", kind)
    assert max(dense_weight_scales(old)) > 1 and set(dense_weight_scales(new)) == {1}
    outputs = []
    for content in (old, new):
        interp = runtime("ai-edge-litert").load(content)
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        windows = np.random.default_rng(1).integers(-128, 128, size=(10, *inp["shape"]), dtype=np.int8)
        for x in windows:
            interp.reset_all_variables()
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            outputs.append(interp.get_tensor(out["index"]).copy())
    np.testing.assert_array_equal(np.array(outputs[:10]), np.array(outputs[10:]))
    assert np.ptp(np.array(outputs, dtype=int)) > 0  # the windows differ and so do the forecasts


def test_tflite_runtime_on_aarch64_refuses_a_per_channel_day_ahead_model_before_running_it(seed_bundles):
    doc, content, _ = _day_ahead_exports(seed_bundles / "cnn-96", "cnn")
    assert max(dense_weight_scales(content)) > 1
    with pytest.raises(ModelError) as err:
        LoadedModel(doc, content, AARCH64_TFLITE_RUNTIME)
    assert err.value.code == "load_failed"
    assert "tflite-runtime 2.14.0 cannot run the model" in str(err.value) and "ai-edge-litert" in str(err.value)
    # the same model elsewhere: another machine, another runtime, or a one-row Dense (next-slot bundles) run
    LoadedModel(doc, content, Runtime("tflite-runtime", "2.14.0", AARCH64_TFLITE_RUNTIME.interpreter_class,
                                      machine="x86_64"))
    LoadedModel(doc, content, runtime("ai-edge-litert"))
    next_slot = (seed_bundles / "cnn-1" / "model.tflite").read_bytes()
    assert max(dense_weight_scales(next_slot)) > 1
    LoadedModel.from_dir(seed_bundles / "cnn-1", AARCH64_TFLITE_RUNTIME)


def test_an_agent_on_aarch64_tflite_runtime_answers_an_old_day_ahead_push_with_load_failed(
        agent_with_api, seed_bundles, signed, server_keys, tmp_path):
    """Over real HTTP: the upload's smoke run would have killed the agent; it answers 422 and keeps serving."""
    from shared.agent_client import AgentClient, ApiError
    from tests.helpers.models import TOKEN, sign_copy

    agent_with_api.ctx.models().runtime = AARCH64_TFLITE_RUNTIME
    doc, old, _ = _day_ahead_exports(seed_bundles / "cnn-96", "cnn")
    bundle = tmp_path / "old-cnn-96"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(old)
    (bundle / "manifest.json").write_bytes(mf.dump(doc))
    sign_copy(bundle, tmp_path / "old-signed", server_keys, "20260101T000000Z")
    client = AgentClient(agent_with_api.components["api"].url, TOKEN)
    with pytest.raises(ApiError) as err:
        client.push(tmp_path / "old-signed")
    assert err.value.status == 422 and err.value.code == "load_failed"
    assert "tflite-runtime" in err.value.message and "ai-edge-litert" in err.value.message
    assert client.status()["models"]["cnn-96"]["active"] is None
    assert client.push(signed("cnn-96", "20260102T000000Z"))["status"] == "active"  # today's export runs
