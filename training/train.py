"""Train the four bundles (cnn-1, lstm-1, cnn-96, lstm-96) on slots before `until`.

Time-ordered split: the last `validation_fraction` of the issue times is validation; training issues whose
targets reach into the validation period are dropped (no leakage). Early stopping on the validation loss,
fixed seeds, progress printed as `progress: <percent> <stage>` lines (the server parses them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared import manifest as mf
from shared.baselines import BASELINES
from shared.schema import SLOT_NS
from shared.series import SlotSeries, iso
from shared.window import WindowSpec, scale_target, unscale_output
from training import dataset


@dataclass(frozen=True)
class BundlePlan:
    kind: str
    layout: str
    steps: int
    horizon: int
    loss: str
    every: int  # use every n-th issue time for training (day-ahead samples overlap heavily)
    residual: str | None = None
    members: int = 1  # independently seeded copies averaged in one graph
    min_known: float = 1.0  # keep training samples with at least this fraction of known target slots
    learning_rate: float = 2e-3
    refit_epochs: int = 0  # after early stopping: epochs on training + validation data (see _refit)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.horizon}"


PLANS = (
    BundlePlan("cnn", "next", 32, 1, "mse", 1, "value", members=3),
    BundlePlan("lstm", "next", 16, 1, "mse", 1, "value"),
    BundlePlan("cnn", "day", 96, 96, "masked_mae", 3, "pool7d8_q50", members=5, min_known=0.5, learning_rate=1e-3,
               refit_epochs=2),
    BundlePlan("lstm", "day", 96, 96, "masked_mae", 3, "pool7d8_q50", members=8, min_known=0.5, learning_rate=1e-3,
               refit_epochs=2),
)

REFIT_LR_FACTOR = 0.3  # refit learning rate relative to the plan's
INT8_GAP_WARN = 0.02  # the int8 model may differ from the float one by at most this much validation MAE

SEED_REFERENCE = {  # the original project's figures on the seed test split (data/seed_house/README.md)
    "seed_lstm_rmse": 0.12, "seed_cnn_rmse": 0.14, "persistence_rmse": 0.079, "persistence_mae": 0.045,
}


@dataclass
class TrainOptions:
    until_ns: int | None = None
    validation_fraction: float = 0.15
    max_epochs: int = 40
    patience: int = 5
    batch_size: int = 128
    seed: int = 42
    quick: bool = False  # tiny epochs/samples: for tests only
    only: tuple[str, ...] = ()

    @property
    def epochs(self) -> int:
        return 2 if self.quick else self.max_epochs


def progress(percent: float, stage: str) -> None:
    print(f"progress: {percent:.0f} {stage}", flush=True)


def metrics(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = pred.reshape(-1) - actual.reshape(-1)
    err = err[np.isfinite(err)]
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))), "n": int(err.size)}


def _split(issues: np.ndarray, horizon: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    if len(issues) == 0:
        return issues, issues
    cut = issues[int(len(issues) * (1 - fraction))]
    train = issues[issues + horizon * SLOT_NS < cut]
    return train, issues[issues >= cut]


_SAMPLES: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def samples(spec: WindowSpec, series: SlotSeries, issues: np.ndarray, min_known: float):
    """dataset.build, remembered for the run: bundles with the same window and issue times share samples."""
    key = (json.dumps(spec.to_dict(), sort_keys=True), id(series), issues.tobytes(), min_known)
    if key not in _SAMPLES:
        _SAMPLES[key] = dataset.build(spec, series, issues, min_known)
    return _SAMPLES[key]


def _progress_callback(keras, label: str, epochs: int, start: float, share: float):
    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            val = f" val_loss {logs['val_loss']:.4f}" if "val_loss" in logs else ""
            print(f"[{label}] epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.4f}{val}", flush=True)
            progress(start + share * (epoch + 1) / epochs, f"{label}: epoch {epoch + 1}")

    return Progress()


def _fit_members(plan: BundlePlan, spec: WindowSpec, data: tuple, opts: TrainOptions, pct: tuple[float, float]):
    """Train `members` independently seeded copies with early stopping on the validation loss."""
    from training.models import build, masked_mae
    from training.tf_setup import keras, seed_everything

    xt, st, xv, sv = data
    epochs = opts.epochs
    members = 1 if opts.quick else plan.members
    loss = masked_mae if plan.loss == "masked_mae" else plan.loss
    trained = []
    for m in range(members):
        label = plan.name if members == 1 else f"{plan.name} member {m + 1}/{members}"
        share = (pct[1] - pct[0]) * 0.75 / members
        seed_everything(opts.seed + m)
        model = build(plan.kind, spec)
        model.compile(optimizer=keras.optimizers.Adam(plan.learning_rate), loss=loss)
        stop = keras.callbacks.EarlyStopping(patience=opts.patience, restore_best_weights=True)
        model.fit(xt, st, validation_data=(xv, sv), epochs=epochs, batch_size=opts.batch_size, verbose=0,
                  shuffle=True, callbacks=[stop, _progress_callback(keras, label, epochs, pct[0] + m * share, share)])
        trained.append(model)
    return trained


def _refit(plan: BundlePlan, trained: list, x: np.ndarray, y: np.ndarray, opts: TrainOptions,
           pct: tuple[float, float]) -> dict:
    """A few more epochs on training + validation data at a lower learning rate (the newest weeks matter most).
    Returns the manifest's record of it."""
    from training.tf_setup import keras

    epochs, lr = (1 if opts.quick else plan.refit_epochs), plan.learning_rate * REFIT_LR_FACTOR
    print(f"[{plan.name}] refit: {epochs} epochs on training + validation data ({len(x)} samples, "
          f"learning rate {lr:g})", flush=True)
    share = (pct[1] - pct[0]) / len(trained)
    for m, model in enumerate(trained):
        keras.backend.set_value(model.optimizer.learning_rate, lr)
        label = f"{plan.name} refit {m + 1}/{len(trained)}"
        model.fit(x, y, epochs=epochs, batch_size=opts.batch_size, verbose=0, shuffle=True,
                  callbacks=[_progress_callback(keras, label, epochs, pct[0] + m * share, share)])
    return {"epochs": epochs, "learning_rate": lr, "samples": int(len(x))}


def _to_int8(plan: BundlePlan, spec: WindowSpec, trained: list, rep: np.ndarray, float_file: Path | None = None):
    """Convert the averaged members to int8 TFLite (batch 1, as the edge runs them); optionally the float twin."""
    from training import export
    from training.models import build, ensemble

    members = []
    for member in trained:
        em = build(plan.kind, spec, batch_size=1)
        em.set_weights(member.get_weights())
        members.append(em)
    export_model = ensemble(members, spec, batch_size=1)
    if float_file is not None:
        float_file.parent.mkdir(parents=True, exist_ok=True)
        float_file.write_bytes(export.to_float(export_model))
    return export.to_int8(export_model, rep)


def _model_entries(model_bytes: bytes) -> dict:
    """The manifest's `input`, `output` and `model` entries for an int8 model."""
    from training import export

    input_entry, output_entry = export.tensor_manifest(model_bytes)
    return {"input": input_entry, "output": {**output_entry, "unit": "kWh"},
            "model": {"file": mf.MODEL_FILE, "sha256": mf.sha256_bytes(model_bytes), "bytes": len(model_bytes)}}


def _scores(spec: WindowSpec, doc: dict, model_bytes: bytes, float_model, xv: np.ndarray, yv: np.ndarray,
            ok: np.ndarray) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Float and int8 (through the edge's inference code) metrics on the validation windows `ok`."""
    from shared.inference import LoadedModel

    float_pred = np.stack([unscale_output(spec, p, x) for p, x in
                           zip(float_model.predict(xv, verbose=0, batch_size=512), xv, strict=True)])
    loaded = LoadedModel({**doc, **_model_entries(model_bytes)}, model_bytes)
    int8_pred = np.stack([unscale_output(spec, loaded.run(x[None]), x) for x in xv])
    return metrics(float_pred[ok], yv[ok]), metrics(int8_pred[ok], yv[ok]), float_pred, int8_pred


def train_one(plan: BundlePlan, series: SlotSeries, out_dir: Path, version: str, opts: TrainOptions,
              pct: tuple[float, float]) -> dict:
    from training import export
    from training.models import ensemble

    t_start = time.time()
    until = opts.until_ns or series.last_ns + SLOT_NS
    issues = dataset.issue_times(series, series.start_ns, until - plan.horizon * SLOT_NS + 1)
    train_issues, val_issues = _split(issues, plan.horizon, opts.validation_fraction)
    train_issues = train_issues[::plan.every]
    if opts.quick:
        train_issues, val_issues = train_issues[-600:], val_issues[:200]
    spec = WindowSpec(layout=plan.layout, steps=plan.steps, horizon=plan.horizon, residual=plan.residual)
    # scaling from the training targets only
    y_all = series.values[series.index_of(int(train_issues[0])):series.index_of(int(train_issues[-1])) + 1]
    spec.mean = float(np.nanmean(y_all))
    spec.std = float(np.nanstd(y_all)) or 1.0
    progress(pct[0], f"{plan.name}: building samples")
    xt, yt, kt = samples(spec, series, train_issues, plan.min_known)
    xv, yv, kv = samples(spec, series, val_issues, plan.min_known)
    if len(xt) < 50 or len(xv) < 10:
        raise ValueError(f"{plan.name}: not enough complete samples (train {len(xt)}, validation {len(xv)}): "
                         f"need about 8 days of history plus training data")
    print(f"[{plan.name}] {len(xt)} training and {len(xv)} validation samples, "
          f"train {iso(int(kt[0]))} … {iso(int(kt[-1]))}, validation {iso(int(kv[0]))} … {iso(int(kv[-1]))}",
          flush=True)
    st, sv = scale_target(spec, yt, xt), scale_target(spec, yv, xv)
    trained = _fit_members(plan, spec, (xt, st, xv, sv), opts, pct)
    model = ensemble(trained, spec)  # the members' layers, shared: it follows the refit

    rng = np.random.default_rng(opts.seed)
    rep = xt[rng.choice(len(xt), size=min(300, len(xt)), replace=False)]
    doc = {
        "schema_version": mf.SCHEMA_VERSION, "name": plan.name, "kind": plan.kind, "horizon_steps": plan.horizon,
        "version": version, "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window": spec.to_dict(),
    }
    base = {name: np.stack([fn(series, int(t), plan.horizon) for t in kv]) for name, fn in BASELINES.items()}
    ok = np.all(np.isfinite(np.stack(list(base.values()))), axis=0) & np.isfinite(yv)  # slots all cover
    validation = {"baselines": {n: metrics(p[ok], yv[ok]) for n, p in base.items()}}
    refit = {}
    if plan.refit_epochs:
        # held-out scores come from the early-stopped members: the refit sees the validation part
        span = pct[1] - pct[0]
        progress(pct[0] + span * 0.75, f"{plan.name}: int8 check before refit")
        held_out = _to_int8(plan, spec, trained, rep)
        validation["float"], validation["int8"], *_ = _scores(spec, doc, held_out, model, xv, yv, ok)
        refit = _refit(plan, trained, np.concatenate([xt, xv]), np.concatenate([st, sv]), opts,
                       (pct[0] + span * 0.77, pct[0] + span * 0.85))
    progress(pct[0] + (pct[1] - pct[0]) * 0.85, f"{plan.name}: int8 export")
    # float/: not part of the bundle, for `backtest --float-model` only
    model_bytes = _to_int8(plan, spec, trained, rep, float_file=out_dir / "float" / f"{plan.name}.tflite")
    doc.update(_model_entries(model_bytes))
    # the shipped model: float vs int8 through the edge's inference code, baselines on the same slots
    m_float, m_int8, float_pred, int8_pred = _scores(spec, doc, model_bytes, model, xv, yv, ok)
    if refit:
        refit["validation_seen"] = {"float": m_float, "int8": m_int8}
    else:
        validation.update({"float": m_float, "int8": m_int8})
    doc["metrics"] = {
        "validation": validation,
        "int8_vs_float": {"mae_rel": abs(m_int8["mae"] - m_float["mae"]) / max(m_float["mae"], 1e-9),
                          "mean_abs_diff_kwh": float(np.mean(np.abs(int8_pred - float_pred)))},
        "seed_reference": SEED_REFERENCE,
    }
    doc["data"] = {"start": iso(int(kt[0])), "end": iso(int(kv[-1]) + plan.horizon * SLOT_NS),
                   "train_samples": int(len(xt)), "validation_samples": int(len(xv)),
                   "validation_start": iso(int(kv[0]))}
    doc["runtimes"] = export.check_runtimes(model_bytes)
    doc["training"] = {"seconds": round(time.time() - t_start, 1), "loss": plan.loss, "seed": opts.seed,
                       "epochs_max": opts.epochs, "refit": refit or None}
    mf.validate(doc)
    bundle = out_dir / plan.name
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / mf.MODEL_FILE).write_bytes(model_bytes)
    (bundle / mf.MANIFEST_FILE).write_bytes(mf.dump(doc))
    gap = doc["metrics"]["int8_vs_float"]["mae_rel"]
    if gap > INT8_GAP_WARN:
        print(f"[{plan.name}] WARNING: the int8 model's validation MAE is {100 * gap:.1f} % away from the float "
              f"model's (more than {100 * INT8_GAP_WARN:.0f} %): check the bundle before deploying it", flush=True)
    best = min(validation["baselines"].items(), key=lambda kv_: kv_[1]["mae"])
    print(f"[{plan.name}] int8 rmse {validation['int8']['rmse']:.4f} mae {validation['int8']['mae']:.4f} | float mae "
          f"{validation['float']['mae']:.4f} | best baseline {best[0]} mae {best[1]['mae']:.4f} | "
          f"{len(model_bytes)} bytes, {doc['training']['seconds']} s", flush=True)
    return doc


def train_all(series: SlotSeries, out_dir: Path, opts: TrainOptions) -> dict[str, dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if opts.until_ns is not None:
        series = series.until(opts.until_ns - 1)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    plans = [p for p in PLANS if not opts.only or p.name in opts.only]
    docs = {}
    try:
        for i, plan in enumerate(plans):
            docs[plan.name] = train_one(plan, series, out_dir, version, opts,
                                        (100 * i / len(plans), 100 * (i + 1) / len(plans)))
    finally:
        _SAMPLES.clear()
    progress(100, "done")
    (out_dir / "summary.json").write_text(json.dumps(
        {n: d["metrics"]["validation"] for n, d in docs.items()}, indent=2) + "\n")
    return docs
