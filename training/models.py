"""Keras (tf_keras) model builders: a 1-D CNN and an LSTM for each horizon.

`batch_size=None` builds the training model, `batch_size=1` the export model (same weights, set_weights).
"""

from __future__ import annotations

from training.tf_setup import keras


def build(kind: str, steps: int, features: int, horizon: int, batch_size: int | None = None):
    inp = keras.Input(shape=(steps, features), batch_size=batch_size, name="window")
    if kind == "cnn" and horizon == 1:
        x = keras.layers.Conv1D(16, 3, activation="relu", padding="causal")(inp)
        x = keras.layers.Conv1D(16, 3, activation="relu", padding="causal", dilation_rate=2)(x)
        last = keras.layers.Cropping1D((steps - 1, 0))(inp)  # the step describing the target
        x = keras.layers.Concatenate()([keras.layers.Flatten()(x), keras.layers.Flatten()(last)])
        x = keras.layers.Dense(32, activation="relu")(x)
        out = keras.layers.Dense(1)(x)
    elif kind == "lstm" and horizon == 1:
        # No skip connections around the LSTM: the converter's fused int8 LSTM then drifts far from the
        # float model (measured: mean |int8 - float| ~ 0.7 of the output's spread with a concatenation).
        x = keras.layers.LSTM(32)(inp)
        x = keras.layers.Dense(16, activation="relu")(x)
        out = keras.layers.Dense(1)(x)
    elif kind == "cnn":
        x = keras.layers.Conv1D(32, 5, activation="relu", padding="same")(inp)
        x = keras.layers.Conv1D(32, 5, activation="relu", padding="same", dilation_rate=2)(x)
        x = keras.layers.Concatenate()([x, inp])
        x = keras.layers.Conv1D(16, 1, activation="relu")(x)
        out = keras.layers.Flatten()(keras.layers.Conv1D(1, 1)(x))
    elif kind == "lstm":
        x = keras.layers.LSTM(32, return_sequences=True)(inp)
        out = keras.layers.Flatten()(keras.layers.Dense(1)(x))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return keras.Model(inp, out, name=f"{kind}_{horizon}")
