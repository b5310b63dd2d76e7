"""Start real Mosquitto and InfluxDB 1.x processes on free loopback ports with temporary data dirs.

Used by the pytest fixtures, the benchmarks and `make demo`. Nothing here listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _find(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        raise RuntimeError(f"{binary} not found: install it (make system-deps: apt-get install mosquitto influxdb)")
    return path


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer within {timeout} s: {log.read_text(errors='replace')[-2000:]}")


class _Process:
    name = "service"

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / f"{self.name}.log"
        self.wrap: Callable[[list[str]], list[str]] | None = None  # e.g. into a memory cgroup (tools/cgroup.py)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> _Process:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        cmd = self._command()
        self.proc = subprocess.Popen(self.wrap(cmd) if self.wrap else cmd, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        _wait(self._ready, timeout, self.name, self.proc, self.log)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process and everything it started (its session: gunicorn's workers, say)."""
        import signal

        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the session, if any
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self if self.running else self.start()  # `with Service(...).start() as s` must not start it twice

    def __exit__(self, *exc):
        self.stop()


# The broker's packet limit as the shipped configs set it (ansible/roles/mosquitto, compose-mosquitto.conf): far
# above any device's message, far below what could hurt a Pi. The agent bounds what it holds on its own too.
MAX_PACKET_SIZE = 1024 * 1024


class Mosquitto(_Process):
    """A Mosquitto broker on 127.0.0.1:port (anonymous, or with a password file)."""

    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, users: dict[str, str] | None = None,
                 persistence: bool = False, persistence_dir: Path | None = None, extra: str = "",
                 max_packet_size: int = MAX_PACKET_SIZE):
        """`persistence_dir`: where mosquitto.db lives (default: workdir); `extra`: more config lines (e.g. the
        Pi's autosave_interval, docs/pi.md)."""
        super().__init__(workdir, port)
        self.users = users or {}
        self.persistence = persistence
        self.persistence_dir = Path(persistence_dir) if persistence_dir else self.workdir
        self.extra = extra
        self.max_packet_size = max_packet_size  # 0: none (a test of the agent's own bound)

    def _command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {LOOPBACK}",
            "user root" if os.geteuid() == 0 else "",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.persistence_dir}/",
            # Never drop queued QoS 1 messages for a slow persistent subscriber (FACTS.md).
            "max_queued_messages 0",
            "max_inflight_messages 100",
            # A client that sends a larger packet is disconnected before the broker holds it (issue 23).
            f"max_packet_size {self.max_packet_size}" if self.max_packet_size else "",
            *self.extra.splitlines(),
        ]
        if self.users:
            pw = self.workdir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run([_find("mosquitto_passwd"), "-b", str(pw), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(line for line in lines if line) + "\n")
        return [_find("mosquitto"), "-c", str(conf)]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                return True
        except OSError:
            return False


class Influxd(_Process):
    """InfluxDB 1.x (Debian's influxd) on 127.0.0.1:port with its data in workdir."""

    name = "influxd"

    def __init__(self, workdir: Path, port: int | None = None, auth: bool = False, data_dir: Path | None = None,
                 data_settings: str = "", monitor_store_interval: str | None = None, http_log: bool = False):
        """`data_dir`: where meta, data and wal live (default: workdir; the config and the log stay in workdir);
        `data_settings`: extra lines for the [data] section (e.g. the Pi's settings, docs/pi.md);
        `monitor_store_interval`: keep influxd's own `_internal` statistics at this interval (default: off, as
        shipped: docs/pi.md)."""
        super().__init__(workdir, port)
        self.rpc_port = free_port()
        self.auth = auth
        self.data_dir = Path(data_dir) if data_dir else self.workdir
        self.data_settings = data_settings
        self.monitor_store_interval = monitor_store_interval
        self.http_log = http_log

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        conf = self.workdir / "influxdb.conf"
        conf.write_text(f"""reporting-enabled = false
bind-address = "{LOOPBACK}:{self.rpc_port}"
[meta]
  dir = "{self.data_dir}/meta"
[data]
  dir = "{self.data_dir}/data"
  wal-dir = "{self.data_dir}/wal"
  query-log-enabled = false
{self.data_settings}
[monitor]
  store-enabled = {'true' if self.monitor_store_interval else 'false'}
  {f'store-interval = "{self.monitor_store_interval}"' if self.monitor_store_interval else ''}
[http]
  bind-address = "{LOOPBACK}:{self.port}"
  auth-enabled = {'true' if self.auth else 'false'}
  log-enabled = {'true' if self.http_log else 'false'}
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
""")
        return [_find("influxd"), "-config", str(conf)]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as r:
                return r.status == 204
        except (urllib.error.URLError, OSError):
            return False

    def query(self, q: str, db: str | None = None, method: str = "GET", user: str | None = None,
              password: str | None = None) -> dict:
        """Run an InfluxQL statement; returns the decoded JSON (used by tests to read data back)."""
        import json
        import urllib.parse

        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        if user:
            params.update(u=user, p=password or "")
        data = None
        url = f"{self.url}/query"
        if method == "POST":
            data = urllib.parse.urlencode(params).encode()
        else:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=30) as r:
            return json.loads(r.read())

    def create_database(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"', method="POST")

    def write_raw(self, db: str, body: bytes) -> int:
        """POST raw line protocol; returns the HTTP status (204 = written)."""
        req = urllib.request.Request(f"{self.url}/write?db={db}&precision=ns", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code


class Gunicorn(_Process):
    """The workstation server under gunicorn (config file written here) on 127.0.0.1:port."""

    name = "gunicorn"

    def __init__(self, workdir: Path, password_hash: str, api_token: str, data_dir: Path | None = None,
                 port: int | None = None, workers: int = 2, extra_env: dict | None = None, extra_config: str = ""):
        super().__init__(workdir, port)
        self.data_dir = data_dir or self.workdir / "data"
        self.config = self.workdir / "server.toml"
        self.config.write_text(f'data_dir = "{self.data_dir}"\nadmin_password_hash = "{password_hash}"\n'
                               f'api_token = "{api_token}"\n{extra_config}')
        self.env = dict(os.environ, SERVER_CONFIG=str(self.config), SERVER_BIND=f"{LOOPBACK}:{self.port}",
                        SERVER_WORKERS=str(workers), PYTHONPATH=str(Path(__file__).resolve().parents[1]),
                        **(extra_env or {}))

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        import sys

        return [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi:app"]

    def start(self, timeout: float = 60.0) -> Gunicorn:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        cmd = self._command()
        self.proc = subprocess.Popen(self.wrap(cmd) if self.wrap else cmd, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1], env=self.env,
                                     start_new_session=True)
        logf.close()
        _wait(self._ready, timeout, self.name, self.proc, self.log)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/login", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False


def spawn_agent(config: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """The edge agent as its own process (`python -m edge_agent run`), output discarded."""
    import sys

    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config), *extra],
                            cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_for_api(client, timeout: float = 30.0) -> None:
    """Until the agent's model API answers a status request (`client`: a shared.agent_client.AgentClient)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.status()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
