"""Keras fitting: independently seeded members with early stopping on the validation loss, then the optional
refit on training + validation data. Everything here draws from TensorFlow's seeded random state, so the order
of the calls is part of what makes a training reproducible."""

from __future__ import annotations

import gc

import numpy as np

from training.models import build, masked_mae, masked_mae_daily
from training.plans import BundlePlan, TrainOptions
from training.progress import log, progress
from training.tf_setup import keras, seed_everything

REFIT_LR_FACTOR = 0.3  # refit learning rate relative to the plan's
FIT_SHARE = 0.75  # of a bundle's progress span: the members' early-stopped training
EXPECTED_EPOCHS = 15  # a first member's guess at where early stopping ends it (later members: the earlier ones')


def _progress_callback(keras, label: str, epochs: int, start: float, share: float, expected: float | None = None):
    """Log each epoch and move the bar. With early stopping the member ends long before `epochs`: its share fills
    by `expected` epochs instead (never past 95 % of it, so the bar does not run ahead when it trains longer)."""
    expected = expected or epochs

    class Progress(keras.callbacks.Callback):
        epochs_run = 0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.epochs_run = epoch + 1
            val = f" val_loss {logs['val_loss']:.4f}" if "val_loss" in logs else ""
            log(label, f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.4f}{val}")
            progress(start + share * min((epoch + 1) / expected, 0.95), f"{label}: epoch {epoch + 1}")

    return Progress()


def fit_members(plan: BundlePlan, spec, data: tuple, opts: TrainOptions, pct: tuple[float, float]) -> list:
    """Train the plan's members (seeds opts.seed, opts.seed + 1, …) on data = (x_train, y_train, x_val, y_val),
    each early-stopped with its best weights restored."""
    xt, st, xv, sv = data
    epochs = opts.epochs
    members = opts.members(plan)
    loss = masked_mae if plan.loss == "masked_mae" else plan.loss
    if plan.loss == "masked_mae" and opts.daily_loss:
        loss = masked_mae_daily(opts.daily_loss)
    trained, ran = [], []
    for m in range(members):
        label = plan.name if members == 1 else f"{plan.name} member {m + 1}/{members}"
        share = (pct[1] - pct[0]) * FIT_SHARE / members
        seed_everything(opts.seed + m)
        model = build(plan.kind, spec)
        model.compile(optimizer=keras.optimizers.Adam(plan.learning_rate), loss=loss)
        stop = keras.callbacks.EarlyStopping(patience=opts.patience, restore_best_weights=True)
        expected = sum(ran) / len(ran) if ran else min(epochs, EXPECTED_EPOCHS)
        bar = _progress_callback(keras, label, epochs, pct[0] + m * share, share, expected)
        _fit(model, xt, st, validation_data=(xv, sv), epochs=epochs, batch_size=opts.batch_size, verbose=0,
             shuffle=True, callbacks=[stop, bar])
        ran.append(bar.epochs_run or epochs)
        trained.append(model)
    return trained


def _fit(model, *args, **kwargs) -> None:
    """`model.fit`, then a full collection: fit leaves its copy of the data (the tensors of its dataset) in
    reference cycles that only a full collection frees; without one after each fit, every member and refit kept
    another copy: cnn-96 on the full year grew by ~300 MiB a member, to a 4.8 GiB peak for the four bundles
    (3.3 GiB with it)."""
    model.fit(*args, **kwargs)
    gc.collect()


def refit(plan: BundlePlan, trained: list, x: np.ndarray, y: np.ndarray, opts: TrainOptions,
          pct: tuple[float, float]) -> dict:
    """A few more epochs for each member on training + validation data at a lower learning rate (the newest
    weeks matter most). Returns the manifest's record of it (`training.refit`)."""
    epochs, lr = opts.refit_epochs(plan), plan.learning_rate * REFIT_LR_FACTOR
    log(plan.name, f"refit: {epochs} epochs on training + validation data ({len(x)} samples, learning rate {lr:g})")
    share = (pct[1] - pct[0]) / len(trained)
    for m, model in enumerate(trained):
        keras.backend.set_value(model.optimizer.learning_rate, lr)
        label = f"{plan.name} refit {m + 1}/{len(trained)}"
        _fit(model, x, y, epochs=epochs, batch_size=opts.batch_size, verbose=0, shuffle=True,
             callbacks=[_progress_callback(keras, label, epochs, pct[0] + m * share, share)])
    return {"epochs": epochs, "learning_rate": lr, "samples": int(len(x))}
