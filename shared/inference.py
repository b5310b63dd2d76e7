"""Run a bundle's int8 TFLite model on a window — the edge's inference path (the backtest uses it too)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import intervals as iv
from shared import manifest as mf
from shared.interpreter import Runtime, runtime
from shared.schema import SLOT_NS
from shared.series import SlotSeries
from shared.window import WindowSpec, build_input, unscale_output

# What a model's tensors may hold in all (weights, activations, state): the shipped bundles hold 7-200 KB. The
# bound is read from the model before `allocate_tensors` sizes the arena (issue 23: a signed bundle declaring a
# 64 MiB tensor kept the agent 64 MiB larger for good, 512 MiB got it killed).
MAX_TENSOR_BYTES = 16 * 1024 * 1024


class ModelError(Exception):
    """The model does not match its manifest or fails to run. `code` is a short machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Forecast:
    values: np.ndarray  # kWh for the slots after the issue time
    complete: bool  # False: the window had too many gaps (the caller should fall back to a baseline)
    p10: np.ndarray | None = None  # kWh band (shared.intervals) when the bundle's manifest has `intervals`
    p90: np.ndarray | None = None


def tensor_entry(detail: dict) -> dict:
    """A manifest `input`/`output` entry from an interpreter's tensor details."""
    scale, zp = detail["quantization"]
    return {"shape": [int(s) for s in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zp)}


def preflight(model_bytes: bytes, rt: Runtime, max_tensor_bytes: int = MAX_TENSOR_BYTES) -> None:
    """What can be known of a model before anything is allocated or run; raises ModelError. A TFLite flatbuffer,
    tensors within `max_tensor_bytes`, and no op this runtime is known to crash on (a SIGSEGV no `except` catches)."""
    if model_bytes[4:8] != b"TFL3":
        raise ModelError("not_tflite", "model.tflite is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        declared = rt.tensor_bytes(model_bytes)
    except Exception as exc:
        raise ModelError("load_failed", f"{rt} cannot read the model: {exc}") from None
    if declared > max_tensor_bytes:
        raise ModelError("too_large", f"the model's tensors declare {declared:,} bytes, at most "
                                      f"{max_tensor_bytes:,} (shared.inference.MAX_TENSOR_BYTES)")
    crash = rt.known_crash(model_bytes)
    if crash:
        raise ModelError("load_failed", f"{rt} cannot run the model: {crash}")


class LoadedModel:
    """One bundle loaded in an interpreter; `predict` is thread-safe."""

    def __init__(self, manifest: dict, model_bytes: bytes, rt: Runtime | None = None,
                 max_tensor_bytes: int = MAX_TENSOR_BYTES):
        self.manifest = manifest
        self.spec: WindowSpec = mf.window_spec(manifest)
        self.runtime = rt or runtime()
        preflight(model_bytes, self.runtime, max_tensor_bytes)
        try:
            self._interp = self.runtime.load(model_bytes)
        except Exception as exc:
            raise ModelError("load_failed", f"{self.runtime} cannot load the model: {exc}") from None
        self._lock = threading.Lock()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._check_tensor("input", self._in, manifest["input"])
        self._check_tensor("output", self._out, manifest["output"])

    @classmethod
    def from_dir(cls, bundle_dir: Path, rt: Runtime | None = None) -> LoadedModel:
        bundle_dir = Path(bundle_dir)
        doc = mf.load(bundle_dir)
        return cls(doc, (bundle_dir / mf.MODEL_FILE).read_bytes(), rt)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @staticmethod
    def _check_tensor(which: str, detail: dict, expected: dict) -> None:
        shape = [int(d) for d in detail["shape"]]
        dtype = np.dtype(detail["dtype"]).name
        if shape != list(expected["shape"]) or dtype != expected["dtype"]:
            raise ModelError("shape_mismatch", f"{which} tensor is {dtype}{shape}, the manifest says "
                                               f"{expected['dtype']}{expected['shape']}")
        if dtype == "int8":
            scale, zp = detail["quantization"]
            if not np.isclose(scale, expected["scale"], rtol=1e-5) or zp != expected["zero_point"]:
                raise ModelError("shape_mismatch", f"{which} quantization ({scale}, {zp}) differs from the "
                                                   f"manifest ({expected['scale']}, {expected['zero_point']})")

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float input [1, steps, F] → float model output (before unscaling)."""
        if self._in["dtype"] == np.int8:
            scale, zp = self._in["quantization"]
            xq = np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8)
        else:
            xq = x.astype(np.float32)
        with self._lock:
            # The fused LSTM op keeps its state in variable tensors across invocations: without the reset the
            # model would see every window it ever ran as one ever-longer sequence (full-year lstm-1: int8 MAE
            # 0.0855 instead of 0.0445). Zeroing them (to the zero point for int8) costs nothing measurable.
            self._interp.reset_all_variables()
            self._interp.set_tensor(self._in["index"], xq)
            self._interp.invoke()
            y = self._interp.get_tensor(self._out["index"]).copy()
        if self._out["dtype"] == np.int8:
            scale, zp = self._out["quantization"]
            return (y.astype(np.float32) - zp) * scale
        return y.astype(np.float32)

    @property
    def needs_temperature(self) -> bool:
        """The bundle takes the outdoor temperature (shared.weather): `predict` needs `temperature`."""
        return self.spec.uses_weather

    def predict(self, series: SlotSeries, issue_ns: int, band_scale: float = 1.0,
                temperature: SlotSeries | None = None) -> Forecast:
        """kWh forecast for the `horizon` slots after issue_ns, from slots ending at or before issue_ns;
        `band_scale`: the recalibration of the band (shared.intervals.recalibrated_scale); `temperature`: °C per
        slot as known at issue_ns (measured before, forecast after; shared.weather), for a bundle that takes it —
        without it such a bundle's window is incomplete."""
        x, complete = build_input(self.spec, series.until(issue_ns), issue_ns, temperature)
        values = unscale_output(self.spec, self.run(x), x)
        return Forecast(values, complete, *self.band(values, issue_ns, band_scale))

    def band(self, values: np.ndarray, issue_ns: int, band_scale: float = 1.0
             ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """P10/P90 around `values` issued at issue_ns, or (None, None) for a bundle without intervals."""
        doc = self.manifest.get("intervals")
        if doc is None:
            return None, None
        steps = np.arange(1, len(values) + 1)
        return iv.band(doc, values, issue_ns + steps * SLOT_NS, steps, band_scale)
