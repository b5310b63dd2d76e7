"""The TFLite interpreter available here: ai-edge-litert (preferred), else tflite-runtime, else tf.lite.

ai-edge-litert is tflite-runtime's successor: it has wheels for Python 3.11–3.13 on aarch64 and works with
numpy 2. tflite-runtime 2.14 (its last release) needs numpy < 2 and has aarch64 wheels for Python 3.11 only.
tf.lite is used only when TensorFlow happens to be installed (never on the Pi).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import platform
import sys
from dataclasses import dataclass, field
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
    machine: str = field(default_factory=platform.machine)

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def load(self, model_content: bytes):
        """An allocated interpreter for this model (raises ValueError/RuntimeError when it does not load)."""
        interp = self.interpreter_class(model_content=model_content, num_threads=1)
        interp.allocate_tensors()
        return interp

    def inspect(self, model_content: bytes):
        """The model in an interpreter without delegates and without allocated tensors, to read its ops and tensors
        as stored: once the default XNNPACK delegate has taken a FULLY_CONNECTED, the interpreter reports one
        scale per output channel for its weights even when the model has one."""
        module = sys.modules[self.interpreter_class.__module__]
        resolver = getattr(module, "OpResolverType", None)
        kw = {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if resolver else {}
        return self.interpreter_class(model_content=model_content, **kw)

    def tensor_bytes(self, model_content: bytes) -> int:
        """The bytes all the model's tensors declare (weights, activations, state; a dynamic dimension counts
        as 1), read before anything is allocated."""
        return sum(math.prod(max(1, int(d)) for d in t["shape"]) * max(1, t["dtype"]().itemsize)
                   for t in self.inspect(model_content).get_tensor_details())

    def known_crash(self, model_content: bytes) -> str | None:
        """Why running this model would kill the process here (a runtime bug that ends in SIGSEGV, which no
        `except` catches, so the model must be refused before its first `invoke`), or None."""
        if self.name == "tflite-runtime" and self.machine in ("aarch64", "arm64") and \
                per_channel_rows_dense(self.inspect(model_content)):
            return ("tflite-runtime on aarch64 crashes (SIGSEGV) on an int8 FULLY_CONNECTED with per-channel weights "
                    "over more than one row, and this model has one (a day-ahead bundle exported before Dense "
                    "weights were quantized per tensor): install ai-edge-litert (requirements/edge.txt) or push a "
                    "bundle trained since (docs/pi.md)")
        return None


def per_channel_rows_dense(interp) -> bool:
    """Whether the model (in an interpreter from `Runtime.inspect`) has an int8 FULLY_CONNECTED with per-channel
    weight scales applied to more than one row."""
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    for op in interp._get_ops_details():
        if op["op_name"] != "FULLY_CONNECTED":
            continue
        x, w = tensors[op["inputs"][0]], tensors[op["inputs"][1]]
        rows = math.prod(int(d) for d in x["shape"][:-1])
        if rows > 1 and len(w["quantization_parameters"]["scales"]) > 1:
            return True
    return False


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
