"""Full-int8 TFLite export with a representative dataset, and which runtimes load the result."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from shared import manifest as mf
from shared.window import WindowSpec
from training.models import build, ensemble
from training.tf_setup import tf

ROOT = Path(__file__).resolve().parent.parent
TFLITE_RUNTIME_PYTHON = os.environ.get("TFLITE_RUNTIME_PYTHON", str(ROOT / ".venv-tflite" / "bin" / "python"))
REPRESENTATIVE_WINDOWS = 300  # training windows that calibrate the int8 ranges


def representative(x_train: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random choice of training windows for the int8 calibration."""
    rng = np.random.default_rng(seed)
    return x_train[rng.choice(len(x_train), size=min(REPRESENTATIVE_WINDOWS, len(x_train)), replace=False)]


def export_members(kind: str, spec: WindowSpec, trained: list, calibration: np.ndarray,
                   float_file: Path | None = None) -> bytes:
    """The trained members averaged in one batch-1 graph (as the edge runs it) → int8 TFLite bytes; with
    `float_file`, also write the float twin there.

    Day-ahead models apply Dense layers (the blend head's fixed 0/1 projections) to every step of the window:
    their weights are quantized per tensor, because tflite-runtime 2.14 on aarch64 crashes on a per-channel int8
    FULLY_CONNECTED over more than one row (docs/pi.md). For 0/1 weights one scale is exact."""
    members = []
    for member in trained:
        em = build(kind, spec, batch_size=1)
        em.set_weights(member.get_weights())
        members.append(em)
    export_model = ensemble(members, spec, batch_size=1)
    if float_file is not None:
        float_file.parent.mkdir(parents=True, exist_ok=True)
        float_file.write_bytes(to_float(export_model))
    return to_int8(export_model, calibration, per_tensor_dense=spec.horizon > 1)


def to_int8(export_model, representative: np.ndarray, per_tensor_dense: bool = False) -> bytes:
    """Quantize weights and activations to int8, with int8 input and output tensors. TensorFlow quantizes Dense
    weights per output channel unless `per_tensor_dense` (one scale per weight tensor)."""

    def rep():
        for x in representative:
            yield [x[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(export_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    conv._experimental_disable_per_channel_quantization_for_dense_layers = per_tensor_dense
    return conv.convert()


def to_float(export_model) -> bytes:
    """The same weights as a float32 TFLite model (the reference the int8 model is compared with)."""
    return tf.lite.TFLiteConverter.from_keras_model(export_model).convert()


def manifest_entries(model_bytes: bytes) -> dict:
    """The manifest's `input`, `output` and `model` entries for an int8 model, read from the model itself."""
    from shared.inference import tensor_entry
    from shared.interpreter import runtime

    interp = runtime().load(model_bytes)
    return {"input": tensor_entry(interp.get_input_details()[0]),
            "output": {**tensor_entry(interp.get_output_details()[0]), "unit": "kWh"},
            "model": {"file": mf.MODEL_FILE, "sha256": mf.sha256_bytes(model_bytes), "bytes": len(model_bytes)}}


_PROBE = """
import json, sys
import numpy as np
from tflite_runtime.interpreter import Interpreter
import importlib.metadata as m
i = Interpreter(model_path=sys.argv[1]); i.allocate_tensors()
d = i.get_input_details()[0]
i.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"])); i.invoke()
print(json.dumps({"version": m.version("tflite-runtime")}))
"""


def check_runtimes(model_bytes: bytes) -> dict[str, str]:
    """{"ai-edge-litert": "2.3.0", "tflite-runtime": "2.14.0" | "not tested: …" | "fails: …"}."""
    from shared.interpreter import runtime

    result = {}
    rt = runtime("ai-edge-litert")
    interp = rt.load(model_bytes)
    d = interp.get_input_details()[0]
    interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    result["ai-edge-litert"] = rt.version
    if not Path(TFLITE_RUNTIME_PYTHON).exists():
        result["tflite-runtime"] = "not tested: no tflite-runtime venv (make venv-tflite)"
        return result
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model_bytes)
        f.flush()
        # A separate process: tflite-runtime needs numpy<2 and must not share a process with TensorFlow.
        r = subprocess.run([TFLITE_RUNTIME_PYTHON, "-c", _PROBE, f.name], capture_output=True, text=True,
                           timeout=60)
    if r.returncode == 0:
        result["tflite-runtime"] = json.loads(r.stdout.strip().splitlines()[-1])["version"]
    else:
        result["tflite-runtime"] = "fails: " + (r.stderr.strip().splitlines() or ["?"])[-1][:200]
    return result
