"""A real multi-node Ray cluster on this machine's loopback, started with Ray's own CLI (`ray start --head`, then
`ray start --address …` per extra node) the way docs/fleet.md tells an operator to — for the fleet test and
benchmark. Each node is a `ray start --block` process in its own session; stop() ends those sessions (the raylets,
GCS and Ray's workers started under them), by process id, even after a failure.

Loopback only. Ray normally replaces 127.0.0.1 with the machine's LAN address, and binds its servers to every
interface unless the node's address is exactly 127.0.0.1. So:
- the head runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps 127.0.0.1 as its address;
- a worker node must run without it (Ray refuses to join a cluster then), and is given the head's address written
  `127.000.000.001`: the same loopback address (the resolver reads it as 127.0.0.1), but not a spelling Ray rewrites,
  so the node's own address becomes 127.0.0.1 too. No node listens beyond loopback (the fleet test checks it).
Usage statistics are off, there is no dashboard, and the cluster uses Ray's token authentication with a token of its
own (`env` holds what a driver such as the server needs: RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.services import free_port

ROOT = Path(__file__).resolve().parents[1]
JOIN_ADDRESS = "127.000.000.001"  # 127.0.0.1, spelled so that `ray start` keeps it (see the module docstring)


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


class RayCluster:
    def __init__(self, workdir: Path, nodes: int = 2, cpus_per_node: float = 1, head_cpus: float | None = None):
        """`nodes` raylets in all (the head is one), each offering `cpus_per_node` CPUs (the head `head_cpus`)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.head_cpus = cpus_per_node if head_cpus is None else head_cpus
        self.port = free_port()
        # Ray's socket paths must stay short (Unix sockets: 107 bytes): not under a deep pytest directory
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))
        self.token_file = self.workdir / "ray_auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        self.procs: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a driver (the server) and every node need in their environment."""
        return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    def _start(self, args: list[str], log_name: str, extra_env: dict[str, str]) -> subprocess.Popen:
        env = dict(os.environ, **self.env, **extra_env)
        env.pop("RAY_AUTH_TOKEN", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([_ray(), "start", "--block", "--disable-usage-stats", *args], cwd=self.workdir,
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def _wait_started(self, proc: subprocess.Popen, log_name: str, timeout: float) -> None:
        log = self.workdir / log_name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
            if "Ray runtime started" in log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"ray start did not start within {timeout} s: {log.read_text(errors='replace')[-3000:]}")

    def start(self, timeout: float = 120.0) -> RayCluster:
        try:
            head = self._start(["--head", f"--port={self.port}", f"--num-cpus={self.head_cpus:g}",
                                "--include-dashboard=false", f"--temp-dir={self.temp_dir}",
                                f"--ray-client-server-port={free_port()}"], "head.log",
                               {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
            self._wait_started(head, "head.log", timeout)
            for k in range(1, self.nodes):
                name = f"node-{k}.log"
                node = self._start([f"--address={JOIN_ADDRESS}:{self.port}", f"--num-cpus={self.cpus:g}"], name,
                                   {})
                self._wait_started(node, name, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def sessions(self) -> list[int]:
        return [p.pid for p in self.procs]

    def processes(self) -> list:
        """Every process of the cluster's sessions (psutil.Process)."""
        import psutil

        out = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                if os.getsid(p.pid) in self.sessions():
                    out.append(p)
        return out

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to each `ray start` (it stops its node), then SIGKILL to whatever of its session is left."""
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        for p in self.processes():
            with contextlib.suppress(Exception):
                p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        self.procs = []
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
