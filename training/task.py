"""One house's training as a self-contained task for a distributed worker (the server runs it as a Ray task):
the house's history goes in, the bundles come back. Nothing is read from or written to the server's disk.

`train_house` is a generator of events, so that progress reaches the server while it runs:
  {"progress": percent, "stage": text}   from the training's `progress:` lines
  {"line": text}                         its `[bundle] …` and `error …` lines (the server redacts error lines)
  {"bundles": {name: {"manifest": bytes, "model": bytes}}, "host", "ray_node", "peak_mb", "seconds"}   last
    (the four bundles of shared.schema.BUNDLE_NAMES, and the weather bundles when given a temperature that gains)
The training runs as `python -m training train` in a private temporary directory on the worker, in its own process
group, limited to the task's CPUs (TensorFlow and OpenMP thread counts); closing the generator (a cancel) or the
worker's death kills it. Each manifest gets `data.node`: the house it was trained for, which the agent reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from shared import manifest as mf
from shared.schema import BUNDLE_NAMES, WEATHER_BUNDLE_NAMES

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # where `training` and `shared` are importable from
MAX_FILE_BYTES = 256 << 20  # a house's history as CSV: a year of 15-minute readings is about 1.5 MB


# `python -m training …` that dies with the process that started it (Linux PR_SET_PDEATHSIG), so a worker killed by
# a forced cancel or a lost node leaves no training behind; argv[1] is that parent's pid (it may already be gone).
BOOT = ("import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "
        "os.getppid() == int(sys.argv.pop(1)) or sys.exit(137); "
        "from training.cli import main; sys.exit(main(sys.argv[1:]))")


def command(files: list[Path], out: Path, until: str | None, quick: bool, epochs: int,
            holidays: str | None = None, timezone: str = "UTC", temperature: Path | None = None,
            keep_weather: bool = False) -> list[str]:
    cmd = [sys.executable, "-c", BOOT, str(os.getpid()), "train", "--out", str(out), "--epochs", str(int(epochs))]
    for f in files:
        cmd += ["--data", str(f)]
    if until:
        cmd += ["--until", until]
    if quick:
        cmd.append("--quick")
    if holidays:
        cmd += ["--holidays", holidays]
    if temperature is not None:
        cmd += ["--temperature", str(temperature)] + (["--keep-weather"] if keep_weather else [])
    if holidays or temperature is not None:
        cmd += ["--timezone", timezone]
    return cmd


def _environment(cpus: float) -> dict:
    threads = str(max(1, int(cpus)))
    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=threads, TF_NUM_INTRAOP_THREADS=threads,
                TF_NUM_INTEROP_THREADS="1" if cpus <= 1 else "2", PYTHONUNBUFFERED="1")


def _where() -> dict:
    """The machine and, under Ray, the Ray node this runs on (the job table records where each job ran)."""
    out = {"host": socket.gethostname(), "ray_node": None}
    try:
        import ray

        if ray.is_initialized():
            out["ray_node"] = ray.get_runtime_context().get_node_id()
    except Exception:  # not under Ray
        pass
    return out


def _event(line: str) -> dict | None:
    if line.startswith("progress: "):
        pct, _, stage = line[len("progress: "):].partition(" ")
        try:
            return {"progress": float(pct), "stage": stage}
        except ValueError:
            return None
    if line.startswith(("[", "error")):
        return {"line": line}
    return None


def _bundles(out: Path, node: str | None) -> dict[str, dict[str, bytes]]:
    """The trained bundles, each manifest with `data.node` (the house it was trained for): the four, and the weather
    bundles the training shipped (those its rule rejected are in out/rejected/, not sent)."""
    result = {}
    for name in BUNDLE_NAMES + tuple(n for n in WEATHER_BUNDLE_NAMES if (out / n).is_dir()):
        doc = mf.load(out / name)
        if node is not None:
            doc["data"]["node"] = node
        result[name] = {"manifest": mf.dump(mf.validate(doc)), "model": (out / name / mf.MODEL_FILE).read_bytes()}
    return result


def train_house(files: list[tuple[str, bytes]], node: str | None = None, until: str | None = None,
                quick: bool = False, epochs: int = 40, cpus: float = 1, holidays: str | None = None,
                timezone: str = "UTC", temperature: tuple[str, bytes] | None = None,
                keep_weather: bool = False) -> Iterator[dict]:
    """Train the four bundles on `files` ((name, CSV bytes): the house's history); see the module docstring.
    `holidays` (`DE`, `DE-HE`) with the house's `timezone`: public holidays as an input (training --holidays).
    `temperature` ((name, CSV bytes): the house's outdoor temperature record, training.weather.load_temperature's
    format) with the house's `timezone` (its local days): the training also trains the weather bundles and ships
    those its rule accepts (training --temperature), or all with `keep_weather`."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="house-") as tmp:
        tmp_dir = Path(tmp)
        paths = []
        for i, (name, data) in enumerate(files):
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"data file {name} is larger than {MAX_FILE_BYTES >> 20} MB")
            path = tmp_dir / f"history-{i}.csv"
            path.write_bytes(data)
            paths.append(path)
        temp_path = None
        if temperature is not None:
            if len(temperature[1]) > MAX_FILE_BYTES:
                raise ValueError(f"temperature file {temperature[0]} is larger than {MAX_FILE_BYTES >> 20} MB")
            temp_path = tmp_dir / "temperature.csv"
            temp_path.write_bytes(temperature[1])
        out = tmp_dir / "out"
        cmd = command(paths, out, until, quick, epochs, holidays, timezone, temp_path, keep_weather)
        proc = subprocess.Popen(cmd, cwd=tmp_dir, env=_environment(cpus),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            for raw in proc.stdout:
                if (event := _event(raw.rstrip())) is not None:
                    yield event
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if proc.returncode is None:  # cancelled (generator closed, KeyboardInterrupt) or failed reading
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"training failed (exit {proc.returncode}); see the job log")
        yield {"bundles": _bundles(out, node), **_where(), "peak_mb": round(usage.ru_maxrss / 1024, 1),
               "seconds": round(time.time() - t0, 1)}


def summary(event: dict) -> str:
    """The final event without the bundle bytes (for logs)."""
    return json.dumps({k: v for k, v in event.items() if k != "bundles"})
