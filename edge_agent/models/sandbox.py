"""A pushed model's first load and run, in a child process: whatever it does there cannot take ingest down.

An interpreter allocates its tensor arena in `allocate_tensors` and runs native code in `invoke`: a bundle that
declares a huge tensor, or hits a runtime bug, would otherwise grow or crash the agent itself (issue 23: a signed
bundle with a 512 MiB tensor got the agent killed during its smoke run; SIGSEGV is caught by no `except`). So
the upload's smoke run happens here first: the child loads the model the way the agent does
(shared.inference.LoadedModel, which refuses a model whose tensors declare more than MAX_TENSOR_BYTES before
anything is allocated), runs it on the window and prints its output. The child has an address-space limit and
volunteers to be the kernel's first choice under memory pressure (`oom_score_adj` 1000: in the unit's cgroup
the kernel kills it, not the agent), so it dies alone. Only a model that ran here is loaded by the agent.

Protocol (stdin → stdout, no pickles): a JSON header line `{"runtime", "manifest", "model_bytes", "x_bytes"}`,
then the model's bytes and the input as `.npy`; the answer is one JSON line `{"ok": true, "y": [...]}` or
`{"ok": false, "code", "message"}`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np

from shared.inference import MAX_TENSOR_BYTES
from shared.interpreter import Runtime

TIMEOUT_S = 60.0
ADDRESS_SPACE_BYTES = 1024 * 1024 * 1024  # the child's whole address space (imports take ~170 MB of it)


class SandboxError(Exception):
    """The model failed in the child: `code` as in shared.inference.ModelError, or `smoke_failed`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _limits(address_space_bytes: int):
    def apply() -> None:  # in the child, before exec
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    return apply


def run_isolated(rt: Runtime, manifest: dict, model_bytes: bytes, x: np.ndarray,
                 max_tensor_bytes: int = MAX_TENSOR_BYTES, address_space_bytes: int = ADDRESS_SPACE_BYTES,
                 timeout_s: float = TIMEOUT_S) -> np.ndarray:
    """The model's output on `x`, computed in a child process; raises SandboxError."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(x, np.float32), allow_pickle=False)
    header = json.dumps({"runtime": [rt.name, rt.version, rt.interpreter_class.__module__], "manifest": manifest, "model_bytes": len(model_bytes),
                         "x_bytes": buf.tell(), "max_tensor_bytes": max_tensor_bytes}).encode() + b"\n"
    try:
        proc = subprocess.run([sys.executable, "-m", "edge_agent.models.sandbox"],
                              input=header + model_bytes + buf.getvalue(), capture_output=True,
                              timeout=timeout_s, preexec_fn=_limits(address_space_bytes),
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    except subprocess.TimeoutExpired:
        raise SandboxError("smoke_failed", f"the model did not finish its smoke run within {timeout_s:g} s") \
            from None
    if proc.returncode != 0:
        rc = proc.returncode
        how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals() \
            else f"exited with {rc}"
        hint = " (out of memory?)" if rc == -signal.SIGKILL else ""
        raise SandboxError("smoke_failed", f"the interpreter {how}{hint} while loading and running the model in a "
                                           f"separate process; the agent is unaffected. "
                                           f"{proc.stderr.decode(errors='replace')[-300:]}".strip())
    try:
        answer = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SandboxError("smoke_failed", "the smoke run gave no answer") from None
    if not answer.get("ok"):
        raise SandboxError(str(answer.get("code", "smoke_failed")), str(answer.get("message", "")))
    return np.asarray(answer["y"], np.float32)


def main() -> int:
    """The child: load, run, answer."""
    from shared.inference import LoadedModel, ModelError

    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    model_bytes = stdin.read(header["model_bytes"])
    x = np.load(io.BytesIO(stdin.read(header["x_bytes"])), allow_pickle=False)
    try:
        name, version, module = header["runtime"]  # the interpreter the agent uses, not the first that imports
        rt = Runtime(name, version, importlib.import_module(module).Interpreter)
        model = LoadedModel(header["manifest"], model_bytes, rt,
                            max_tensor_bytes=int(header["max_tensor_bytes"]))
        y = model.run(x).reshape(-1)
        answer = {"ok": True, "y": [float(v) for v in y]}
    except ModelError as exc:
        answer = {"ok": False, "code": exc.code, "message": str(exc)}
    except Exception as exc:
        answer = {"ok": False, "code": "smoke_failed", "message": f"the model fails to run: {exc}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
