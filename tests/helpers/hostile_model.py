"""Build a valid int8 TFLite model that declares one huge intermediate tensor (a tile of its input), for the
tests of the edge's bundle limits: `python -m tests.helpers.hostile_model STEPS FEATURES BYTES OUT` (TensorFlow:
run by the training venv, in a child process of the test).

input int8 [1, STEPS, FEATURES] -> tile to about BYTES int8 values -> mean -> output int8 [1, 1].
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> None:
    import tensorflow as tf

    steps, feats, nbytes, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    k = max(1, nbytes // (steps * feats))

    @tf.function(input_signature=[tf.TensorSpec([1, steps, feats], tf.float32)])
    def f(x):
        big = tf.tile(x, [1, k, 1])
        return tf.reshape(tf.reduce_mean(big, axis=[1, 2]), [1, 1])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.normal(size=(1, steps, feats)).astype(np.float32)] for _ in range(2))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with open(out, "wb") as fh:
        fh.write(conv.convert())


if __name__ == "__main__":
    main()
