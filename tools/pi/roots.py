"""Debian arm64 roots under qemu-user: built once with debootstrap, cached as tarballs in build/.

A Raspberry Pi 4/5 runs 64-bit Raspberry Pi OS, which is Debian bookworm (Python 3.11) underneath; trixie
(Python 3.13) is the next release. Both roots are `minbase` plus Python's venv and CA certificates: what the edge
needs to install its wheels. The cache key is the suite, the architecture and the package list, like the Ansible
test's root (tests/deploy/chroot_provision.py).

Emulation needs qemu-user-static with binfmt_misc (`ensure_binfmt` mounts and enables it, as root). Inside a root
only /proc and /dev are mounted: with the host's /sys bind-mounted, LiteRT's cpuinfo reads the x86 host's CPU
topology and every invoke dies with SIGSEGV (FACTS.md); a Pi has its own /sys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = ROOT / "build"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,ca-certificates"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
# The Pi 4's core. Emulated code is 5-20x slower than a Pi: the CPU model changes which instructions qemu offers,
# not the speed, and no figure measured under it is a Pi figure.
QEMU_CPU = "cortex-a72"


@dataclass(frozen=True)
class Suite:
    name: str  # Debian codename
    python: str  # the suite's python3, major.minor


SUITES = {"bookworm": Suite("bookworm", "3.11"), "trixie": Suite("trixie", "3.13")}


class PiSetupError(RuntimeError):
    """The host cannot run arm64 roots (not root, no debootstrap or qemu-user-static, binfmt_misc refused)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cache_path(suite: str, arch: str = "arm64") -> Path:
    key = hashlib.sha256(f"{suite} {arch} {PACKAGES}".encode()).hexdigest()[:8]
    return CACHE_DIR / f"debootstrap-{suite}-{arch}-{key}.tar"


def ensure_binfmt() -> str:
    """Make arm64 binaries run on this host; returns the qemu interpreter registered for them.

    The registration must carry the F flag (the interpreter opened at registration time), so that it works inside a
    chroot that has no qemu binary of its own: Debian's qemu-user-static registers it so."""
    if os.geteuid() != 0:
        raise PiSetupError("the arm64 roots need root (debootstrap, chroot, mount)")
    for tool in ("debootstrap", "update-binfmts"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            raise PiSetupError(f"{tool} not found: apt-get install debootstrap qemu-user-static binfmt-support")
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False)
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False, capture_output=True)
    if not entry.exists():
        raise PiSetupError("binfmt_misc has no qemu-aarch64 entry: apt-get install qemu-user-static binfmt-support, "
                           f"mount -t binfmt_misc binfmt_misc {BINFMT}, update-binfmts --enable qemu-aarch64")
    text = entry.read_text()
    if "enabled" not in text.splitlines()[0]:
        raise PiSetupError(f"{entry} is disabled: update-binfmts --enable qemu-aarch64")
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
    if "F" not in flags:
        raise PiSetupError(f"{entry} lacks the F flag (flags {flags!r}): chroots cannot find the interpreter")
    return next(ln.split(None, 1)[1] for ln in text.splitlines() if ln.startswith("interpreter"))


def build_cached(suite: str) -> tuple[Path, float, bool]:
    """The suite's root tarball (built by debootstrap when missing); returns (path, seconds, was cached)."""
    tar = cache_path(suite)
    if tar.exists():
        return tar, 0.0, True
    t = time.monotonic()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(f"{tar}.build")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        log(f"debootstrap --arch=arm64 {suite} (a few minutes, once; cached as {tar.name})")
        r = subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}", suite,
                            str(work), MIRROR], capture_output=True, text=True)
        if r.returncode != 0:
            raise PiSetupError(f"debootstrap {suite} arm64 failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        part = Path(f"{tar}.part")
        subprocess.run(["tar", "-cf", str(part), "-C", str(work), "."], check=True)
        part.rename(tar)  # a killed build never leaves a truncated cache behind
    finally:
        _unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)
    return tar, time.monotonic() - t, False


def _unmount_below(path: Path) -> None:
    """Unmount what a failed debootstrap left mounted inside `path` (its /proc, /sys), before deleting it."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)


class ArmRoot:
    """An unpacked arm64 root in `path` with /proc and /dev mounted (never /sys), host DNS and CA certificates.

    Use as a context manager: leaving it unmounts and deletes the root."""

    def __init__(self, suite: str, path: Path):
        self.suite = SUITES[suite]
        self.path = Path(path)
        self._mounted: list[Path] = []
        self.unpack_s = 0.0

    def __enter__(self) -> ArmRoot:
        tar, _, _ = build_cached(self.suite.name)
        t = time.monotonic()
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xf", str(tar), "-C", str(self.path)], check=True)
        self.unpack_s = time.monotonic() - t
        # nothing a package installs may start a daemon on the host (the root shares its network)
        rc = self.path / "usr/sbin/policy-rc.d"
        rc.write_text("#!/bin/sh\nexit 101\n")
        rc.chmod(0o755)
        shutil.copy("/etc/resolv.conf", self.path / "etc/resolv.conf")
        # the host's bundle, so that pip trusts what this host trusts (a TLS-intercepting proxy, say)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", self.path / "etc/ssl/host-ca-bundle.crt")
        try:
            self._mount(["-t", "proc", "proc"], "proc")
            self._mount(["--bind", "/dev"], "dev")
        except BaseException:
            self._cleanup()
            raise
        return self

    def _mount(self, args: list[str], where: str) -> None:
        target = self.path / where
        subprocess.run(["mount", *args, str(target)], check=True)
        self._mounted.append(target)

    def bind(self, host_dir: Path, where: str) -> None:
        """Bind-mount a host directory into the root (a pip cache shared by every run, say)."""
        (self.path / where).mkdir(parents=True, exist_ok=True)
        self._mount(["--bind", str(host_dir)], where)

    def __exit__(self, *exc) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        targets = [*self._mounted, self.path / "proc", self.path / "dev", self.path / "sys"]
        for target in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)
        self._mounted.clear()
        # never delete through a mount point that is still there (the host's /dev, the shared pip cache)
        if not any(os.path.ismount(t) for t in targets):
            shutil.rmtree(self.path, ignore_errors=True)

    def run(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 900,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the root (as root, cwd /), capturing its output."""
        full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                    "LANG": "C.UTF-8", "QEMU_CPU": QEMU_CPU, "PIP_CERT": "/etc/ssl/host-ca-bundle.crt",
                    "SSL_CERT_FILE": "/etc/ssl/host-ca-bundle.crt", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                    **(env or {})}
        r = subprocess.run([CHROOT, str(self.path), *cmd], capture_output=True, text=True, env=full_env, cwd="/",
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"in the {self.suite.name} arm64 root, {' '.join(cmd)} exited {r.returncode}:\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def popen(self, *cmd: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                    "QEMU_CPU": QEMU_CPU, **(env or {})}
        return subprocess.Popen([CHROOT, str(self.path), *cmd], env=full_env, cwd="/", **kw)

    def host_path(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")


@contextlib.contextmanager
def arm_root(suite: str, parent: Path) -> Iterator[ArmRoot]:
    with ArmRoot(suite, Path(parent) / f"root-{suite}") as root:
        yield root


def main() -> int:
    """`python -m tools.pi.roots [suite …]`: build (or find) the cached roots."""
    ensure_binfmt()
    for suite in sys.argv[1:] or list(SUITES):
        tar, seconds, cached = build_cached(suite)
        log(f"{suite}: {tar} ({'cached' if cached else f'built in {seconds:.0f} s'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
