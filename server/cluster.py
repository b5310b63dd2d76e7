"""Ray for the job worker: trainings run as Ray tasks (training.task.train_house), on a Ray started inside this
process at the first training (embedded: nothing to install or run, `[jobs] ray_address` empty) or on an existing
cluster (`ray_address` = host:port of `ray start --head`; the server's machine is a node of that cluster).

Ray is imported and started lazily: a server that never trains (the page, the API workers, most tests) never pays
its start (several seconds) or its memory (a few hundred MB: docs/fleet.md has the figures).

On loopback (embedded, or a cluster at 127.0.0.1/localhost) Ray is told to stay there: with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 it keeps 127.0.0.1 as the node address instead of replacing it with the LAN
address, and it binds its servers to 127.0.0.1 only when the node address is exactly that. Usage statistics are off
(RAY_USAGE_STATS_ENABLED=0), there is no dashboard, and the cluster uses Ray's token authentication: embedded, a
token generated in data_dir (0600); on a cluster, `ray_auth_token_file` or Ray's own lookup (RAY_AUTH_TOKEN,
~/.ray/auth_token).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from server.config import JobsConfig
from server.files import private_dir, write_private

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost")
EMBEDDED_OBJECT_STORE = 128 << 20  # bundles are ≤ 200 KB and a house's history a few MB: Ray's minimum is 75 MB
CAPACITY_TTL_S = 10.0
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class ClusterError(RuntimeError):
    """Ray could not be started or reached (the message names the setting)."""


class Cluster:
    def __init__(self, cfg: JobsConfig, data_dir: Path):
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self._lock = threading.Lock()
        self._ray = None
        self._remote = None
        self._owner: threading.Thread | None = None
        self._stopping = threading.Event()
        self._capacity = (0.0, 1)
        self.start_seconds: float | None = None

    @property
    def started(self) -> bool:
        return self._ray is not None

    @property
    def embedded(self) -> bool:
        return not self.cfg.ray_address

    # -- start ------------------------------------------------------------------------------------------------
    def ensure(self):
        """The `ray` module, connected (started embedded at the first call, or connected to the cluster).

        Ray is started and stopped by a thread of its own that lives as long as it does: the processes an embedded
        Ray starts die with the thread that started them (Linux's parent-death signal follows the thread), so
        starting it from a job's thread would kill it when that job ends."""
        with self._lock:
            if self._ray is None:
                ready, box = threading.Event(), {}
                self._stopping = threading.Event()
                self._owner = threading.Thread(target=self._own, args=(ready, box), name="ray", daemon=True)
                self._owner.start()
                ready.wait()
                if "error" in box:
                    self._owner = None
                    raise box["error"]
            return self._ray

    def _own(self, ready: threading.Event, box: dict) -> None:
        try:
            self._start()
        except BaseException as exc:
            box["error"] = exc
            ready.set()
            return
        ready.set()
        self._stopping.wait()
        try:
            self._ray.shutdown()
        finally:
            self._ray = None

    def _start(self) -> None:
        t0 = time.monotonic()
        self._prepare_environment()
        import ray

        try:
            if self.embedded:
                ray.init(**self._embedded_args())
            else:
                self._check_reachable()
                ray.init(address=self.cfg.ray_address, namespace="home-energy", log_to_driver=False)
        except ClusterError:
            raise
        except Exception as exc:
            where = "embedded Ray" if self.embedded else f"Ray at jobs.ray_address {self.cfg.ray_address}"
            raise ClusterError(f"{where} did not start: {type(exc).__name__}: {str(exc)[:300]}") from None
        from training.task import train_house

        self._remote = ray.remote(train_house)
        self._ray = ray
        self.start_seconds = round(time.monotonic() - t0, 2)
        log.info("Ray %s in %.1f s: %s CPUs", "started" if self.embedded else "connected", self.start_seconds,
                 ray.cluster_resources().get("CPU"))

    def _embedded_args(self) -> dict:
        args = {"num_cpus": self.cfg.embedded_cpus or os.cpu_count() or 1, "include_dashboard": False,
                "namespace": "home-energy", "object_store_memory": EMBEDDED_OBJECT_STORE, "log_to_driver": False,
                # no idle Python workers started ahead (about 85 MB each): a training starts its own
                "_system_config": {"enable_worker_prestart": False, "prestart_worker_first_driver": False}}
        if self.cfg.ray_temp_dir:
            args["_temp_dir"] = self.cfg.ray_temp_dir
        return args

    def _host(self) -> str:
        return self.cfg.ray_address.rsplit(":", 1)[0]

    def _check_reachable(self) -> None:
        """Fail fast with the setting's name: Ray itself retries an unreachable address for minutes."""
        host, port = self._host(), int(self.cfg.ray_address.rsplit(":", 1)[1])
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise ClusterError(f"Ray at jobs.ray_address {self.cfg.ray_address} is unreachable: "
                               f"{exc.strerror or exc}") from None

    def _prepare_environment(self) -> None:
        """What Ray reads from the environment at import and start (see the module docstring)."""
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        if self.embedded or self._host() in LOOPBACK:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        token_file = self.cfg.ray_auth_token_file or (str(self._embedded_token()) if self.embedded else "")
        if token_file:
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN_PATH"] = token_file
            os.environ.pop("RAY_AUTH_TOKEN", None)  # it would win over the file
        try:  # a second start in this process (another cluster, another token): Ray caches the token
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        except (ImportError, AttributeError):
            pass
        if self.embedded:  # Ray's workers are this process's children: they import training.task from here
            path = os.environ.get("PYTHONPATH", "")
            if str(PACKAGE_ROOT) not in path.split(os.pathsep):
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), path) if p)

    def _embedded_token(self) -> Path:
        path = private_dir(self.data_dir / "ray") / "auth_token"
        if not path.exists():
            write_private(path, secrets.token_hex(32).encode())
        return path

    # -- capacity ---------------------------------------------------------------------------------------------
    def capacity(self) -> int:
        """How many trainings may run at once: the cluster's CPUs / cpus_per_job (nodes that join add to it),
        capped by max_concurrent; 1 before Ray runs (the first training starts it)."""
        if not self.started:
            return 1
        at, value = self._capacity
        if time.monotonic() - at > CAPACITY_TTL_S:
            cpus = float(self._ray.cluster_resources().get("CPU", 0))
            value = max(1, int(cpus // self.cfg.cpus_per_job + 1e-9))
            if self.cfg.max_concurrent:
                value = min(value, self.cfg.max_concurrent)
            self._capacity = (time.monotonic(), value)
        return value

    # -- tasks ------------------------------------------------------------------------------------------------
    def submit(self, files: list[tuple[str, bytes]], **kw):
        """Start one house's training; an ObjectRefGenerator of training.task events."""
        self.ensure()
        opts = {"num_cpus": self.cfg.cpus_per_job, "scheduling_strategy": "SPREAD", "max_retries": 0}
        if self.cfg.memory_mb_per_job:
            opts["memory"] = self.cfg.memory_mb_per_job << 20
        return self._remote.options(**opts).remote(files, cpus=self.cfg.cpus_per_job, **kw)

    def events(self, gen, wait_s: float = 1.0) -> Iterator[dict | None]:
        """The task's events as they come; None whenever `wait_s` passed without one (time to check for a
        cancel). A failed task raises its error here."""
        ray = self._ray
        while True:
            ready, _ = ray.wait([gen], timeout=wait_s)
            if not ready:
                yield None
                continue
            try:
                ref = next(gen)
            except StopIteration:
                return
            yield ray.get(ref)

    def cancel(self, gen) -> None:
        """Stop a task: its generator is interrupted and kills its training process group."""
        try:
            self._ray.cancel(gen)
        except Exception:  # finished meanwhile
            log.debug("cancel of a finished task", exc_info=True)

    def shutdown(self) -> None:
        """Stop (embedded) or leave (cluster) Ray, from the thread that started it."""
        with self._lock:
            if self._owner is not None:
                self._stopping.set()
                self._owner.join(60)
                self._owner = None
