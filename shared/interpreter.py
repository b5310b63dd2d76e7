"""The TFLite interpreter available here: ai-edge-litert (preferred), else tflite-runtime, else tf.lite.

ai-edge-litert is tflite-runtime's successor: it has wheels for Python 3.11–3.13 on aarch64 and works with
numpy 2. tflite-runtime 2.14 (its last release) needs numpy < 2 and has aarch64 wheels for Python 3.11 only.
tf.lite is used only when TensorFlow happens to be installed (never on the Pi).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


class NoInterpreter(RuntimeError):
    pass


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: Any

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def load(self, model_content: bytes):
        """An allocated interpreter for this model (raises ValueError/RuntimeError when it does not load)."""
        interp = self.interpreter_class(model_content=model_content, num_threads=1)
        interp.allocate_tensors()
        return interp


_cached: Runtime | None = None


def runtime(preferred: str | None = None) -> Runtime:
    """The first interpreter that imports (or the preferred one)."""
    global _cached
    if _cached is not None and preferred in (None, _cached.name):
        return _cached
    errors = []
    for dist, module in CANDIDATES:
        if preferred and dist != preferred:
            continue
        try:
            mod = importlib.import_module(module)
            cls = mod.Interpreter
        except Exception as exc:  # ImportError, or numpy ABI errors from tflite-runtime
            errors.append(f"{dist}: {exc}")
            continue
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        rt = Runtime(dist, version, cls)
        if preferred is None:
            _cached = rt
        return rt
    raise NoInterpreter("no TFLite interpreter: pip install ai-edge-litert (" + "; ".join(errors) + ")")
