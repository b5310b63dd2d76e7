"""docs/fleet.md's cluster commands, run as written, in network namespaces this test makes (issue 23, item 9).

The documented head command failed (token authentication needs a token before `ray start`), and Ray's GCS and
raylets listen on every address. Three hosts on one bridge: a head and a worker on the cluster network
(10.77.0.0/24) and a machine outside it (10.78.0.5, on the same wire). Each runs the doc's blocks with its own
addresses; then the worker must be a node of the cluster that runs a task, the head's GCS must answer from inside
the cluster network, and no port any Ray process listens on may answer from outside it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "fleet.md"
CLUSTER_NET, HEAD_IP, WORKER_IP, OUTSIDE_IP = "10.77.0.0/24", "10.77.0.1", "10.77.0.2", "10.78.0.5"


def doc_blocks() -> dict[str, str]:
    """The shell blocks marked `<!-- fleet-doc-test: NAME -->` in docs/fleet.md."""
    text = DOC.read_text()
    return {m.group(1): m.group(2) for m in
            re.finditer(r"<!-- fleet-doc-test: (\w+) -->\n```sh\n(.*?)```", text, re.DOTALL)}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


class Namespaces:
    """A bridge in a namespace of its own, and hosts (namespaces) with one veth on it each."""

    def __init__(self):
        self.tag = f"{os.getpid() % 100000}"
        self.bridge = f"fdbr{self.tag}"
        self.hosts: dict[str, str] = {}
        sh("ip", "netns", "add", self.bridge)
        sh("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge, "link", "set", "br0", "up")

    def host(self, name: str, address: str, routes: list[str]) -> str:
        ns = f"fd{name}{self.tag}"
        sh("ip", "netns", "add", ns)
        self.hosts[name] = ns
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"v{name}{self.tag}", "netns", ns, "type", "veth", "peer", "name",
           f"p{name}{self.tag}", "netns", self.bridge)
        sh("ip", "-n", self.bridge, "link", "set", f"p{name}{self.tag}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", f"v{name}{self.tag}")
        sh("ip", "-n", ns, "link", "set", f"v{name}{self.tag}", "up")
        for net in routes:  # the outside machine shares the wire: both networks are on-link for everyone
            sh("ip", "-n", ns, "route", "add", net, "dev", f"v{name}{self.tag}")
        return ns

    def processes(self) -> list[int]:
        """The processes whose network namespace is one of these hosts'."""
        inodes = {os.stat(f"/run/netns/{ns}").st_ino for ns in self.hosts.values()}
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                    out.append(int(pid))
        return out

    def kill_processes(self, grace_s: float = 10.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace_s
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)

    def close(self) -> None:
        for ns in [*self.hosts.values(), self.bridge]:
            sh("ip", "netns", "del", ns, check=False)


def connects(ns: str, address: str, port: int) -> bool:
    """Whether a TCP connection from inside `ns` to address:port is accepted (2 s)."""
    code = (f"import socket; s = socket.socket(); s.settimeout(2)\n"
            f"try:\n s.connect(({address!r}, {port})); print('open')\nexcept OSError: print('closed')")
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", code).stdout.strip() == "open"


def listening_ports(ns: str) -> set[int]:
    out = sh("ip", "netns", "exec", ns, "ss", "-ltnH").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(bool(_why_not()), reason=str(_why_not()))
def test_documented_cluster_commands_join_and_stay_on_the_cluster_network(tmp_path):
    blocks = doc_blocks()
    assert set(blocks) >= {"env", "firewall", "head", "worker"}, sorted(blocks)
    net = Namespaces()
    tmp = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))  # Ray's socket paths must stay short
    env = dict(os.environ, HOME=str(tmp / "home"), RAY_TMPDIR=str(tmp), PYTHONPATH=str(ROOT),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("RAY_AUTH_TOKEN", None)
    (tmp / "home").mkdir()

    def run(ns: str, node_ip: str, *names: str, timeout: float = 180) -> None:
        """The doc's env block, this host's addresses, then the named blocks, as one bash script."""
        script = "set -e\n" + blocks["env"] + textwrap.dedent(f"""
            export CLUSTER_NET={CLUSTER_NET} HEAD_IP={HEAD_IP} NODE_IP={node_ip}
            export RAY_AUTH_TOKEN_PATH={tmp}/ray_token
            """) + "\n".join(blocks[n] for n in names)
        r = subprocess.run(["ip", "netns", "exec", ns, "bash", "-c", script], env=env, capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == 0, f"{names} on {node_ip}: {r.stdout[-2000:]}\n{r.stderr[-3000:]}"

    head = worker = None
    try:
        head = net.host("h", HEAD_IP, ["10.78.0.0/24"])
        worker = net.host("w", WORKER_IP, ["10.78.0.0/24"])
        outside = net.host("x", OUTSIDE_IP, ["10.77.0.0/24"])
        run(head, HEAD_IP, "firewall", "head")
        assert (tmp / "ray_token").stat().st_mode & 0o777 == 0o600
        run(worker, WORKER_IP, "firewall", "worker")

        # the worker is a node of the cluster and runs a task
        code = textwrap.dedent(f"""
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            ray.init(address="{HEAD_IP}:6379", _node_ip_address="{HEAD_IP}")
            nodes = [n for n in ray.nodes() if n["Alive"]]
            worker = next(n["NodeID"] for n in nodes if n["NodeManagerAddress"] == "{WORKER_IP}")
            where = ray.remote(lambda: ray.util.get_node_ip_address()).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(worker, soft=False)).remote()
            print(len(nodes), ray.get(where, timeout=120))
            """)
        r = subprocess.run(["ip", "netns", "exec", head, sys.executable, "-c", code], env=dict(
            env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(tmp / "ray_token")), capture_output=True,
            text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.split()[-2:] == ["2", WORKER_IP], r.stdout + r.stderr[-3000:]

        # inside the cluster network the head answers; from outside no Ray port of either node does
        assert connects(worker, HEAD_IP, 6379)
        for ns, address in ((head, HEAD_IP), (worker, WORKER_IP)):
            ports = listening_ports(ns)
            assert 6379 in ports or ns == worker
            assert len(ports) >= 3, ports
            reachable = sorted(p for p in ports if connects(outside, address, p))
            assert reachable == [], f"Ray ports of {address} reachable from outside: {reachable}"
    finally:
        # not `ray stop`: it kills every Ray process of the machine (the namespaces share the process table), a
        # developer's own cluster included; only what runs in this test's namespaces is the test's
        net.kill_processes()
        left = net.processes()
        net.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert left == [], f"processes outlived the test's namespaces: {left}"


def test_doc_blocks_are_found():
    """The markers the test reads are in the doc (a rename there must not silently skip the commands)."""
    assert {"env", "firewall", "head", "worker"} <= set(doc_blocks())
    assert "ray get-auth-token --generate" in doc_blocks()["head"]
    assert socket.inet_aton(HEAD_IP)
