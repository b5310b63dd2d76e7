"""A filesystem for power-cut tests: it keeps what was not synced in memory and forgets it at the cut.

An in-memory FUSE filesystem (mfusepy, libfuse 3) that tracks, for every file, its content as last fsynced and,
for every directory, its entries as last fsynced. Unmounting it is the power cut: the server then reverts to what
was durable and mounts again, so the processes started next see what a disk would hold after the power came
back. What survives of the writes that were not synced is chosen by the cut's mode:

- `drop`: nothing (every unsynced write, new name, rename and removal is lost) — deterministic, for regression
  tests;
- `torn`: any subset of the unsynced 4 KiB pages of each file, its old or new size, and a prefix of each
  directory's unsynced operations in their order (a rename is one operation) — what an honest disk's writeback
  may leave; seeded, so a failure can be replayed;
- `none`: everything (a crash of the processes only, the kernel survives).

Names follow the strict POSIX rule: a new, renamed or removed entry is durable only once its directory is
fsynced. `--journal` models ext4 with its kernel instead: any fsync, and a commit every 5 s, make every pending name
and every size set by truncate durable, and data dirty for 30 s is written back (used for the database: influxd
1.6 writes its series file without fsync and relies on that writeback; the agent's own state is held to the strict
rule, with no writeback at all).

    python -m tools.powercut_fs MOUNTPOINT [--mode torn] [--seed 1] [--journal]

Control files next to the mount point: write the next cut's mode (`drop`, `none`, or `torn SEED`) to
`MOUNTPOINT.cut` before unmounting; create `MOUNTPOINT.stop` to make the server exit at the next unmount, and
`MOUNTPOINT.sync` to make everything durable now (it is removed when done). The
server writes the number of mounts so far to `MOUNTPOINT.mounted` each time it is mounted. `PowercutFS` below
does all of that for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

PAGE = 4096
JOURNAL_COMMIT_S = 5.0  # ext4's default commit interval (--journal only)
DIRTY_EXPIRE_S = 30.0  # the kernel writes data dirty for this long (vm.dirty_expire_centisecs; --journal only)


class Node:
    """A file, directory or symlink: its current state and the state last made durable."""

    _next = 1

    def __init__(self, kind: int, mode: int):
        self.ino = Node._next
        Node._next += 1
        self.kind = kind  # stat.S_IFREG, S_IFDIR or S_IFLNK
        self.mode = mode & 0o7777
        self.uid, self.gid = os.getuid(), os.getgid()
        self.nlink = 2 if kind == stat.S_IFDIR else 1
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now
        # files: pages (index -> PAGE bytes) and size, and their durable copies
        self.pages: dict[int, bytes] = {}
        self.size = 0
        self.dpages: dict[int, bytes] = {}
        self.dsize = 0
        # directories: name -> node, the durable entries and the operations since (each a {name: node | None})
        self.entries: dict[str, Node] = {}
        self.dentries: dict[str, Node] = {}
        self.ops: list[dict[str, Node | None]] = []
        self.target = ""
        self.trunc_size: int | None = None  # a size set by truncate since the last fsync (metadata in a journal)
        self.dirty_at: float | None = None  # when the data first changed since the last fsync (writeback)

    @property
    def data_dirty(self) -> bool:
        return self.size != self.dsize or self.pages != self.dpages

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        out = bytearray()
        for i in range(offset // PAGE, (end - 1) // PAGE + 1):
            out += self.pages.get(i, bytes(PAGE))
        skip = offset - (offset // PAGE) * PAGE
        return bytes(out[skip:skip + end - offset])

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            i, within = divmod(offset + pos, PAGE)
            n = min(PAGE - within, len(data) - pos)
            page = self.pages.get(i, bytes(PAGE))
            self.pages[i] = page[:within] + data[pos:pos + n] + page[within + n:]
            pos += n
        self.size = max(self.size, offset + len(data))

    def truncate(self, length: int) -> None:
        if length < self.size:
            last = (length - 1) // PAGE if length else -1
            for i in [i for i in self.pages if i > last]:
                del self.pages[i]
            if length % PAGE and last in self.pages:
                keep = length % PAGE
                self.pages[last] = self.pages[last][:keep] + bytes(PAGE - keep)
        self.size = length

    def sync_data(self) -> None:
        self.dpages, self.dsize = dict(self.pages), self.size
        self.trunc_size = self.dirty_at = None

    def touch(self) -> None:
        if self.dirty_at is None:
            self.dirty_at = time.monotonic()

    def commit_size(self) -> None:
        """A journal commit makes a size set by truncate durable (the data stays as it was: zeros past the old
        end, nothing past the new one)."""
        if self.trunc_size is None:
            return
        size, self.trunc_size = self.trunc_size, None
        self.dpages = {i: p for i, p in self.dpages.items() if i * PAGE < size}
        last = (size - 1) // PAGE
        if size % PAGE and last in self.dpages:
            self.dpages[last] = self.dpages[last][:size % PAGE] + bytes(PAGE - size % PAGE)
        self.dsize = size

    def sync_entries(self) -> None:
        self.dentries, self.ops = dict(self.entries), []


class PowercutOps:
    """The FUSE operations (mfusepy's Operations protocol) over the Node tree."""

    use_ns = True
    flag_nullpath_ok = True

    def __init__(self, journal: bool = False):
        self.root = Node(stat.S_IFDIR, 0o755)
        self.journal = journal
        self._mutex = threading.Lock()
        self.handles: dict[int, Node] = {}
        self._fh = 0
        self.fsyncs = 0

    # -- the tree --------------------------------------------------------------------------------------------
    def _lookup(self, path: str) -> Node:
        node = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if node.kind != stat.S_IFDIR or part not in node.entries:
                raise OSError(errno.ENOENT, path)
            node = node.entries[part]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._lookup(head or "/")
        if parent.kind != stat.S_IFDIR:
            raise OSError(errno.ENOTDIR, path)
        return parent, name

    @staticmethod
    def _set(parent: Node, changes: dict[str, Node | None]) -> None:
        for name, node in changes.items():
            if node is None:
                parent.entries.pop(name, None)
            else:
                parent.entries[name] = node
        parent.ops.append(changes)
        parent.mtime = parent.ctime = time.time_ns()

    def _node(self, path: str | None, fh: int | None) -> Node:
        if fh and fh in self.handles:
            return self.handles[fh]
        if path is None:
            raise OSError(errno.EBADF, "no path")
        return self._lookup(path)

    def _handle(self, node: Node) -> int:
        self._fh += 1
        self.handles[self._fh] = node
        return self._fh

    def _commit_names(self) -> None:
        """A journal commit: every pending name and every size set by truncate become durable."""
        for node in self._all():
            if node.kind == stat.S_IFDIR:
                node.sync_entries()
            elif node.kind == stat.S_IFREG:
                node.commit_size()

    def sync_all(self) -> None:
        """`sync`: everything written so far is durable."""
        with self._mutex:
            for node in self._all():
                if node.kind == stat.S_IFDIR:
                    node.sync_entries()
                elif node.kind == stat.S_IFREG:
                    node.sync_data()

    def writeback(self, expire_s: float) -> None:
        """What a kernel with a journalling filesystem does on its own every few seconds: commit the journal
        (names, sizes set by truncate) and write data that has been dirty for `expire_s`."""
        now = time.monotonic()
        with self._mutex:
            for node in self._all():
                if node.kind == stat.S_IFREG and node.dirty_at is not None and now - node.dirty_at >= expire_s:
                    node.sync_data()
            self._commit_names()

    # -- the cut ---------------------------------------------------------------------------------------------
    def cut(self, mode: str, seed: int = 0) -> None:
        """Revert to what was durable (mode drop), keep some of the rest (torn), or everything (none)."""
        rng = random.Random(seed)
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.ino in seen:
                continue
            seen.add(node.ino)
            if node.kind == stat.S_IFDIR:
                if mode == "none":
                    node.sync_entries()
                else:
                    keep = rng.randint(0, len(node.ops)) if mode == "torn" else 0
                    entries = dict(node.dentries)
                    for changes in node.ops[:keep]:
                        for name, child in changes.items():
                            if child is None:
                                entries.pop(name, None)
                            else:
                                entries[name] = child
                    node.entries = entries
                    node.sync_entries()
                stack += list(node.entries.values())
            elif node.kind == stat.S_IFREG:
                if mode == "none":
                    node.sync_data()
                elif mode == "torn" and node.data_dirty:
                    size = rng.choice((node.dsize, node.size))
                    pages = {}
                    for i in set(node.pages) | set(node.dpages):
                        page = rng.choice((node.dpages.get(i), node.pages.get(i)))
                        if page is not None and i * PAGE < size:
                            pages[i] = page
                    if size % PAGE and (size - 1) // PAGE in pages:  # nothing past the size in the last page
                        last = (size - 1) // PAGE
                        pages[last] = pages[last][:size % PAGE] + bytes(PAGE - size % PAGE)
                    node.pages, node.size = pages, size
                    node.sync_data()
                else:
                    node.pages, node.size = dict(node.dpages), node.dsize
        self.handles.clear()
        for node in self._all():
            if node.kind == stat.S_IFDIR:
                node.nlink = 2 + sum(1 for c in node.entries.values() if c.kind == stat.S_IFDIR)

    def _all(self):
        seen, stack = set(), [self.root]
        while stack:
            node = stack.pop()
            if node.ino in seen:
                continue
            seen.add(node.ino)
            yield node
            if node.kind == stat.S_IFDIR:
                stack += list(node.entries.values())

    # -- FUSE operations ------------------------------------------------------------------------------------
    def getattr(self, path, fh=None):
        with self._mutex:
            n = self._node(path, fh)
            size = len(n.target) if n.kind == stat.S_IFLNK else n.size
            return {"st_mode": n.kind | n.mode, "st_nlink": n.nlink, "st_uid": n.uid, "st_gid": n.gid,
                    "st_size": size, "st_blocks": (size + 511) // 512, "st_atime": n.atime, "st_mtime": n.mtime,
                    "st_ctime": n.ctime, "st_blksize": PAGE}

    def readdir(self, path, fh):
        with self._mutex:
            return [".", "..", *self._node(path, None).entries]

    def opendir(self, path):
        return 0

    def releasedir(self, path, fh):
        return 0

    def access(self, path, amode):
        with self._mutex:
            self._lookup(path)
        return 0

    def statfs(self, path):
        return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": 1 << 24, "f_bfree": 1 << 23, "f_bavail": 1 << 23,
                "f_files": 1 << 20, "f_ffree": 1 << 19, "f_namemax": 255}

    def mkdir(self, path, mode):
        with self._mutex:
            parent, name = self._parent(path)
            if name in parent.entries:
                raise OSError(errno.EEXIST, path)
            self._set(parent, {name: Node(stat.S_IFDIR, mode)})
            parent.nlink += 1
        return 0

    def rmdir(self, path):
        with self._mutex:
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.entries:
                raise OSError(errno.ENOTEMPTY, path)
            self._set(parent, {name: None})
            parent.nlink -= 1
        return 0

    def create(self, path, mode, fi=None):
        with self._mutex:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                node = Node(stat.S_IFREG, mode)
                self._set(parent, {name: node})
            return self._handle(node)

    def open(self, path, flags):
        with self._mutex:
            return self._handle(self._lookup(path))

    def release(self, path, fh):
        with self._mutex:
            self.handles.pop(fh, None)
        return 0

    def flush(self, path, fh):
        return 0

    def read(self, path, size, offset, fh):
        with self._mutex:
            return self._node(path, fh).read(offset, size)

    def write(self, path, data, offset, fh):
        with self._mutex:
            node = self._node(path, fh)
            node.write(offset, data)
            node.touch()
            node.mtime = node.ctime = time.time_ns()
            return len(data)

    def truncate(self, path, length, fh=None):
        with self._mutex:
            node = self._node(path, fh)
            node.truncate(length)
            node.trunc_size = length
            node.touch()
            node.mtime = node.ctime = time.time_ns()
        return 0

    def fallocate(self, path, mode, offset, size, fh):
        with self._mutex:
            node = self._node(path, fh)
            if mode == 0 and offset + size > node.size:
                node.size = offset + size
        return 0

    def fsync(self, path, datasync, fh):
        with self._mutex:
            self.fsyncs += 1
            self._node(path, fh).sync_data()
            if self.journal:
                self._commit_names()
        return 0

    def fsyncdir(self, path, datasync, fh):
        with self._mutex:
            self.fsyncs += 1
            node = self._node(path, None)
            if self.journal:
                self._commit_names()
            else:
                node.sync_entries()
        return 0

    def unlink(self, path):
        with self._mutex:
            parent, name = self._parent(path)
            node = self._lookup(path)
            self._set(parent, {name: None})
            node.nlink -= 1
        return 0

    def rename(self, old, new):
        with self._mutex:
            src, a = self._parent(old)
            dst, b = self._parent(new)
            node = self._lookup(old)
            target = dst.entries.get(b)
            if target is not None and target.kind == stat.S_IFDIR and target.entries:
                raise OSError(errno.ENOTEMPTY, new)
            if src is dst:
                self._set(src, {a: None, b: node})  # one operation: a cut keeps both halves or neither
            else:
                self._set(dst, {b: node})
                self._set(src, {a: None})
                if node.kind == stat.S_IFDIR:
                    src.nlink -= 1
                    dst.nlink += 1
        return 0

    def link(self, target, source):
        with self._mutex:
            node = self._lookup(source)
            parent, name = self._parent(target)
            self._set(parent, {name: node})
            node.nlink += 1
        return 0

    def symlink(self, target, source):
        with self._mutex:
            parent, name = self._parent(target)
            node = Node(stat.S_IFLNK, 0o777)
            node.target = source
            self._set(parent, {name: node})
        return 0

    def readlink(self, path):
        with self._mutex:
            return self._lookup(path).target

    def chmod(self, path, mode, fh=None):
        with self._mutex:
            node = self._node(path, fh)
            node.mode = mode & 0o7777
        return 0

    def chown(self, path, uid, gid, fh=None):
        with self._mutex:
            node = self._node(path, fh)
            if uid != -1 and uid != 0xFFFFFFFF:
                node.uid = uid
            if gid != -1 and gid != 0xFFFFFFFF:
                node.gid = gid
        return 0

    def utimens(self, path, times=None, fh=None):
        with self._mutex:
            node = self._node(path, fh)
            now = time.time_ns()
            node.atime, node.mtime = times if times else (now, now)
        return 0


def serve(mountpoint: str, mode: str = "torn", seed: int = 1, journal: bool = False) -> None:
    """Mount, and after every unmount apply the cut and mount again, until `MOUNTPOINT.stop` exists."""
    import logging

    import mfusepy

    logging.getLogger("mfusepy").setLevel(logging.ERROR)
    ops = PowercutOps(journal)
    control = Path(mountpoint)
    sync_file = control.with_name(control.name + ".sync")

    def background() -> None:
        last = time.monotonic()
        while True:
            time.sleep(0.05)
            if sync_file.exists():
                ops.sync_all()
                sync_file.unlink()
            if journal and time.monotonic() - last >= JOURNAL_COMMIT_S:
                ops.writeback(DIRTY_EXPIRE_S)
                last = time.monotonic()

    threading.Thread(target=background, daemon=True).start()
    cuts = 0
    while True:
        mounted = control.with_name(control.name + ".mounted")
        mounted.write_text(str(cuts + 1))
        mfusepy.FUSE(ops, mountpoint, foreground=True, nothreads=True, hard_remove=True, fsname="powercut",
                     default_permissions=False)
        stop = control.with_name(control.name + ".stop")
        if stop.exists():
            stop.unlink()
            return
        cut_file = control.with_name(control.name + ".cut")
        how, cut_seed = mode, seed + cuts
        if cut_file.exists():
            words = cut_file.read_text().split()
            cut_file.unlink()
            how = words[0]
            cut_seed = int(words[1]) if len(words) > 1 else cut_seed
        ops.cut(how, cut_seed)
        cuts += 1


class PowercutFS:
    """The filesystem as a server process, for tests and benchmarks: `with PowercutFS(dir) as fs: … fs.cut()`."""

    def __init__(self, mountpoint: Path, mode: str = "torn", seed: int = 1, journal: bool = False):
        self.mountpoint = Path(mountpoint)
        self.mode, self.seed, self.journal = mode, seed, journal
        self.proc: subprocess.Popen | None = None
        self.cuts = 0

    def _control(self, suffix: str) -> Path:
        return self.mountpoint.with_name(self.mountpoint.name + suffix)

    def _wait_mounted(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        marker = self._control(".mounted")
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the power-cut filesystem exited with {self.proc.returncode}")
            try:
                if int(marker.read_text() or 0) >= count and os.path.ismount(self.mountpoint):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        log = self._control(".log")
        tail = log.read_text(errors="replace")[-1000:] if log.exists() else ""
        raise TimeoutError(f"{self.mountpoint} was not mounted within {timeout} s: {tail}")

    def start(self) -> PowercutFS:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        for suffix in (".mounted", ".stop", ".cut", ".sync"):
            self._control(suffix).unlink(missing_ok=True)
        args = [sys.executable, "-m", "tools.powercut_fs", str(self.mountpoint), "--mode", self.mode,
                "--seed", str(self.seed)] + (["--journal"] if self.journal else [])
        with open(self._control(".log"), "ab") as log:
            self.proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self._wait_mounted(1, timeout=60)
        return self

    def _unmount(self) -> None:
        for _attempt in range(100):
            r = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True, text=True)
            if r.returncode == 0 or not os.path.ismount(self.mountpoint):
                return
            time.sleep(0.05)  # a process that was killed may still be closing its files
        raise RuntimeError(f"cannot unmount {self.mountpoint}: {r.stderr.strip()}")

    def cut(self, mode: str | None = None, seed: int | None = None) -> None:
        """The power cut: every process using the mount must be gone (SIGKILL them first)."""
        self._control(".cut").write_text(f"{mode or self.mode} {self.seed * 100_003 + self.cuts if seed is None else seed}")
        self._unmount()
        self.cuts += 1
        self._wait_mounted(self.cuts + 1, timeout=60)

    def sync(self, timeout: float = 20.0) -> None:
        """`sync`: make everything written so far durable (e.g. a database's files after its setup)."""
        marker = self._control(".sync")
        marker.write_text("")
        deadline = time.monotonic() + timeout
        while marker.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the power-cut filesystem did not sync")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._control(".stop").write_text("")
            try:
                self._unmount()
                self.proc.wait(10)
            except (RuntimeError, subprocess.TimeoutExpired):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> PowercutFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.powercut_fs", description=__doc__.split("\n\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--mode", choices=("drop", "torn", "none"), default="torn")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--journal", action="store_true", help="any fsync commits every pending name (ext4)")
    args = ap.parse_args(argv)
    serve(args.mountpoint, args.mode, args.seed, args.journal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
