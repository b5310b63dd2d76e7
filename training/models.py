"""Keras (tf_keras) model builders: a 1-D CNN and an LSTM for each horizon.

`batch_size=None` builds the training model, `batch_size=1` the export model (same weights, set_weights).

Day-ahead models are *blends*: per target slot, the network (CNN or LSTM) outputs softmax weights over the
window's kWh candidates (the same slot 1…7 days ago, the 7-day median, the pooled quantiles, the recent level)
and forecasts their weighted sum, minus the residual base so that the output stays a residual like every other
model's. The forecast is thus always a convex combination of what the house actually used, which keeps a model
trained on winter months sane in summer (free Dense heads over-fitted within 2-3 epochs and lost to their own
residual base on the summer test split). Several independently seeded members are averaged in one graph.

A day-ahead model with temperature inputs (a weather bundle, shared.weather) multiplies its blend, per target slot,
by a learned factor (1 at the start of training): a blend of past days can only repeat what the house used, and a
cold day after mild ones needs more than any of them. The factor sees the same hidden layer as the blend weights,
which sees the temperature of the target day and of the days the history came from.
"""

from __future__ import annotations

import numpy as np

from shared.window import WindowSpec, value_columns
from training.tf_setup import keras, tf

L = keras.layers


def masked_mae(y_true, y_pred):
    """Mean absolute error over the known targets only (unknown target slots are NaN and never invented)."""
    known = tf.math.is_finite(y_true)
    err = tf.where(known, tf.abs(tf.where(known, y_true, 0.0) - y_pred), 0.0)
    return tf.reduce_sum(err) / tf.maximum(tf.reduce_sum(tf.cast(known, tf.float32)), 1.0)


def masked_mae_daily(weight: float):
    """masked_mae plus `weight` × the day's error: |Σ over the known target slots of (forecast − actual)| / slots.

    For a load that cycles (a heat pump's compressor) the MAE-optimal slot forecast is the median of each slot,
    whose sum falls far short of the day's energy (the 7-day median's days miss by 13 kWh where yesterday's miss by
    3.6, heating months of the heat pump data). With the day's error in the loss at a weight above 1, raising the
    slots until the day's sum is right always pays (a slot's MAE rises by at most what the day's falls): forecasts
    whose days add up, at the least cost per slot. At exactly 1 the trade is even where the slots are above their
    medians, and the first heat pump month trained so (October 2021) still forecast 76 % of its days' energy;
    training.train uses 4."""
    def loss(y_true, y_pred):
        known = tf.math.is_finite(y_true)
        err = tf.where(known, tf.where(known, y_true, 0.0) - y_pred, 0.0)
        day = tf.reduce_mean(tf.abs(tf.reduce_sum(err, axis=-1)) / tf.cast(tf.shape(y_true)[-1], tf.float32))
        return masked_mae(y_true, y_pred) + weight * day

    loss.__name__ = "masked_mae_daily"
    return loss


def _fixed_projection(inp, features: int, columns: list[int], name: str):
    """A frozen 0/1 Dense layer that picks `columns` of the features (exact in int8)."""
    sel = np.zeros((features, len(columns)), np.float32)
    sel[columns, range(len(columns))] = 1.0
    return L.Dense(len(columns), use_bias=False, trainable=False, weights=[sel], name=name)(inp)


def _weather_factor(inp, hidden):
    """What a weather bundle multiplies its blend with, per target slot: 1 at the start of training, plus a 1×1
    convolution of the hidden layer (per slot) and a linear function of the window's means over its 96 steps (one
    per day: the level of the lags, the pools, the last day, and the temperatures of the target day and of the days
    before — a linear model of how much the day changes, like the daily model that bounds what these inputs allow)."""
    per_slot = L.Conv1D(1, 1, kernel_initializer="zeros", bias_initializer="ones", name="weather_factor")(hidden)
    per_day = L.Dense(1, kernel_initializer="zeros", name="weather_day")(L.GlobalAveragePooling1D()(inp))
    return L.Add()([per_slot, L.Reshape((1, 1))(per_day)])


def _blend_head(inp, hidden, spec: WindowSpec):
    cand_cols = value_columns(spec)
    logits = L.Conv1D(len(cand_cols), 1)(hidden)
    weights = L.Softmax(axis=-1)(logits)
    candidates = _fixed_projection(inp, spec.n_features, cand_cols, "candidates")
    ones = np.ones((len(cand_cols), 1), np.float32)
    mix = L.Dense(1, use_bias=False, trainable=False, weights=[ones], name="weighted_sum")(
        L.Multiply()([weights, candidates]))
    if spec.uses_weather:
        mix = L.Multiply()([mix, _weather_factor(inp, hidden)])
    base = _fixed_projection(inp, spec.n_features, [spec.features.index(spec.residual)], "residual_base")
    return L.Flatten()(L.Subtract()([mix, base]))


def build(kind: str, spec: WindowSpec, batch_size: int | None = None):
    """One model for `spec`."""
    inp = keras.Input(shape=(spec.steps, spec.n_features), batch_size=batch_size, name="window")
    return keras.Model(inp, _body(kind, spec, inp), name=f"{kind}_{spec.horizon}")


def ensemble(members: list, spec: WindowSpec, batch_size: int | None = None):
    """One graph averaging separately trained members (each a model from `build`)."""
    if len(members) == 1:
        return members[0]
    inp = keras.Input(shape=(spec.steps, spec.n_features), batch_size=batch_size, name="window")
    for i, m in enumerate(members):
        m._name = f"{m.name}_member{i + 1}"  # nested models need unique names
    return keras.Model(inp, L.Average()([m(inp) for m in members]), name=f"{members[0].name}_ensemble")


def _body(kind: str, spec: WindowSpec, inp):
    steps, horizon = spec.steps, spec.horizon
    if kind == "cnn" and horizon == 1:
        x = L.Conv1D(16, 3, activation="relu", padding="causal")(inp)
        x = L.Conv1D(16, 3, activation="relu", padding="causal", dilation_rate=2)(x)
        last = L.Cropping1D((steps - 1, 0))(inp)  # the step describing the target
        x = L.Concatenate()([L.Flatten()(x), L.Flatten()(last)])
        x = L.Dense(32, activation="relu")(x)
        return L.Dense(1)(x)
    if kind == "lstm" and horizon == 1:
        # No skip connections around the LSTM: the converter's fused int8 LSTM then drifts far from the
        # float model (measured: mean |int8 - float| ~ 0.7 of the output's spread with a concatenation).
        x = L.LSTM(32)(inp)
        x = L.Dense(16, activation="relu")(x)
        return L.Dense(1)(x)
    if kind == "cnn":
        x = inp
        for dilation in (1, 2, 4, 8):  # each target slot sees ±30 neighbouring slots of the day
            x = L.Conv1D(16, 3, activation="relu", padding="same", dilation_rate=dilation)(x)
        return _blend_head(inp, x, spec)
    if kind == "lstm":
        return _blend_head(inp, L.LSTM(16, return_sequences=True)(inp), spec)
    raise ValueError(f"unknown model kind {kind!r}")
