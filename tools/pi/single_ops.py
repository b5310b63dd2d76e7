"""Single-op int8 TFLite models, built with TensorFlow on the host, to find which op an interpreter cannot run.

Each model is one op of the shipped bundles with their shapes (from cnn-96 / lstm-96: `Dense` on a [96, 23]
window = FULLY_CONNECTED with keep_num_dims, SOFTMAX over [96, 18], MUL and SUB of two int8 tensors, Conv1D =
CONV_2D, RESHAPE), converted like training/export.py does (full int8, int8 in and out), so that the converted model
holds that op alone; `fully_connected_rows2` is a plain two-row Dense. The index (index.json) lists each model's
ops and how many scales its Dense weights have: TensorFlow 2.21 quantizes them per output channel unless told
otherwise (the `_per_tensor` variants). `probe.py` runs them inside an arm64 root, each in its own process (a
SIGSEGV kills only it).

Needs TensorFlow (the workstation venv): `python -m tools.pi.single_ops OUT_DIR`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _models():
    import tensorflow as tf

    k = tf.keras
    window = k.Input((96, 23), batch_size=1)
    scores = k.Input((96, 18), batch_size=1)
    col_a, col_b = k.Input((96, 1), batch_size=1), k.Input((96, 1), batch_size=1)
    rows = k.Input((23,), batch_size=2)
    return {
        "fully_connected_3d": k.Model(window, k.layers.Dense(18, use_bias=False)(window)),
        "fully_connected_2d": k.Model(window, k.layers.Dense(4)(k.layers.Flatten()(window))),
        "fully_connected_rows2": k.Model(rows, k.layers.Dense(18, use_bias=False)(rows)),
        "conv_2d": k.Model(window, k.layers.Conv1D(16, 3, padding="same", activation="relu")(window)),
        "softmax": k.Model(scores, k.layers.Softmax()(scores)),
        "mul": _mul(k),
        "sub": k.Model([col_a, col_b], k.layers.Subtract()([col_a, col_b])),
        "reshape": k.Model(col_a, k.layers.Reshape((96,))(col_a)),
    }


def _mul(k):
    a, b = k.Input((96, 18), batch_size=1), k.Input((96, 18), batch_size=1)
    return k.Model([a, b], k.layers.Multiply()([a, b]))


def convert(model, per_tensor_dense: bool = False) -> bytes:
    """Full int8 with int8 input and output, like training's export. TensorFlow 2.21 quantizes Dense weights per
    output channel; `per_tensor_dense` asks for one scale per tensor instead (the converter's experimental switch)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shapes = [tuple(int(d) for d in t.shape) for t in model.inputs]

    def data():
        for _ in range(50):
            yield [rng.normal(size=s).astype(np.float32) for s in shapes]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = data
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    conv._experimental_disable_per_channel_quantization_for_dense_layers = per_tensor_dense
    return conv.convert()


def ops_of(content: bytes) -> list[str]:
    """The op names in a model (TensorFlow's analyzer, parsed)."""
    import contextlib
    import io
    import re

    import tensorflow as tf

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_content=content)
    return re.findall(r"Op#\d+ (\w+)\(", out.getvalue())


def dense_weight_scales(content: bytes) -> list[int]:
    """How many quantization scales each FULLY_CONNECTED op's weights have (1: per tensor; >1: per channel), read
    without delegates (`Runtime.inspect`)."""
    from shared.interpreter import runtime

    interp = runtime("ai-edge-litert").inspect(content)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return [len(tensors[op["inputs"][1]]["quantization_parameters"]["scales"])
            for op in interp._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    models = _models()
    jobs = [(name, model, False) for name, model in models.items()]
    # the op that tflite-runtime 2.14 cannot run on aarch64, with per-tensor weights (docs/pi.md)
    jobs += [(f"{name}_per_tensor", models[name], True) for name in ("fully_connected_3d", "fully_connected_rows2")]
    for name, model, per_tensor in jobs:
        content = convert(model, per_tensor)
        (out / f"{name}.tflite").write_bytes(content)
        index[name] = {"ops": ops_of(content), "dense_weight_scales": dense_weight_scales(content)}
        print(f"{name}: {index[name]}", file=sys.stderr)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
