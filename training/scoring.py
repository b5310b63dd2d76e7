"""Validation scores: the baselines, the float Keras model and the int8 model run through the edge's inference
code (shared.inference), all on the same slots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.baselines import BASELINES
from shared.series import SlotSeries
from shared.window import WindowSpec, unscale_output


def metrics(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = pred.reshape(-1) - actual.reshape(-1)
    err = err[np.isfinite(err)]
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))), "n": int(err.size)}


def baseline_scores(series: SlotSeries, issues: np.ndarray, actual: np.ndarray, horizon: int
                    ) -> tuple[dict[str, dict], np.ndarray]:
    """Every baseline's metrics on the validation issues, and the mask of the target slots every baseline
    covers and whose actual value is known: the models are scored on exactly those."""
    base = {name: np.stack([fn(series, int(t), horizon) for t in issues]) for name, fn in BASELINES.items()}
    ok = np.all(np.isfinite(np.stack(list(base.values()))), axis=0) & np.isfinite(actual)
    return {name: metrics(p[ok], actual[ok]) for name, p in base.items()}, ok


@dataclass
class ModelScores:
    """One model's validation metrics as float (Keras) and as int8 (TFLite), and their predictions."""

    float_metrics: dict[str, float]
    int8_metrics: dict[str, float]
    float_pred: np.ndarray  # kWh [n, horizon] for every validation window
    int8_pred: np.ndarray

    def as_dict(self) -> dict[str, dict]:
        return {"float": self.float_metrics, "int8": self.int8_metrics}

    def int8_vs_float(self) -> dict[str, float]:
        """The manifest's `metrics.int8_vs_float`."""
        f, q = self.float_metrics["mae"], self.int8_metrics["mae"]
        return {"mae_rel": abs(q - f) / max(f, 1e-9),
                "mean_abs_diff_kwh": float(np.mean(np.abs(self.int8_pred - self.float_pred)))}


def model_scores(spec: WindowSpec, doc: dict, model_bytes: bytes, float_model, xv: np.ndarray, yv: np.ndarray,
                 ok: np.ndarray) -> ModelScores:
    """The Keras model and its int8 conversion `model_bytes` (run through shared.inference with the manifest
    `doc`, as the edge runs it) on the validation windows xv; metrics on the slots `ok`."""
    # imported here, not above: training.backtest (and through it the server's pages) imports this module, and
    # training.export loads TensorFlow
    from shared.inference import LoadedModel
    from training.export import manifest_entries

    float_pred = np.stack([unscale_output(spec, p, x) for p, x in
                           zip(float_model.predict(xv, verbose=0, batch_size=512), xv, strict=True)])
    loaded = LoadedModel({**doc, **manifest_entries(model_bytes)}, model_bytes)
    int8_pred = np.stack([unscale_output(spec, loaded.run(x[None]), x) for x in xv])
    return ModelScores(metrics(float_pred[ok], yv[ok]), metrics(int8_pred[ok], yv[ok]), float_pred, int8_pred)
