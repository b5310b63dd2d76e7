"""Run TFLite models with one interpreter, each in its own process: which ones load, invoke, or crash.

Standalone (numpy and an interpreter only): copied into an arm64 root and run there with its venv's python.
`python probe.py MODULE FILE.tflite …` → one JSON line {file: {"status": "ok"|"signal N"|"exit N", "output":
sha256 of the first output's bytes, "detail": …}}. MODULE is `ai_edge_litert.interpreter` or
`tflite_runtime.interpreter`; `--no-xnnpack` uses the builtin kernels without the default delegates.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys


def one(module: str, path: str, xnnpack: bool) -> None:
    import importlib

    import numpy as np

    mod = importlib.import_module(module)
    kw = {} if xnnpack else {"experimental_op_resolver_type": mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interp = mod.Interpreter(model_path=path, num_threads=1, **kw)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype == np.int8:
            x = rng.integers(-128, 128, size=detail["shape"], dtype=np.int8)
        else:
            x = rng.normal(size=detail["shape"]).astype(dtype)
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    print(hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:16])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--one":
        one(argv[1], argv[2], argv[3] == "1")
        return 0
    xnnpack = "--no-xnnpack" not in argv
    args = [a for a in argv if a != "--no-xnnpack"]
    module, files = args[0], args[1:]
    result = {}
    for path in files:
        r = subprocess.run([sys.executable, __file__, "--one", module, path, "1" if xnnpack else "0"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode == 0:
            result[path] = {"status": "ok", "output": r.stdout.strip()}
        else:
            status = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
            result[path] = {"status": status, "detail": r.stderr.strip().splitlines()[-1:]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
