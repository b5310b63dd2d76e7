"""Archive bombs and odd archives are refused quickly and in bounded memory (issue 13: a 23 KB bz2 tar of two
million empty members took the agent from 80 to 826 MiB for 42 s before `bad_archive`)."""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import threading
import time
import zlib

import psutil
import pytest

from shared.agent_client import AgentClient, ApiError
from shared.bundle import Bundle, BundleRejected
from tests.helpers.models import TOKEN

LIMIT = 2 * 1024 * 1024  # the API's default max_bundle_bytes
EMPTY_MEMBER = tarfile.TarInfo("a").tobuf(format=tarfile.USTAR_FORMAT)  # one 512-byte header, no data
MEMBERS_PER_MIB = (1 << 20) // len(EMPTY_MEMBER)


def bz2_bomb(mib: int) -> bytes:
    """A multi-stream bz2 tar of mib × 2048 empty members (~134 bytes per MiB of tar)."""
    return bz2.compress(EMPTY_MEMBER * MEMBERS_PER_MIB, 9) * mib


def gzip_bomb(mib: int) -> bytes:
    """A multi-member gzip tar of mib × 2048 empty members (~4.6 KB per MiB of tar)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    one = co.compress(EMPTY_MEMBER * MEMBERS_PER_MIB) + co.flush()
    return one * mib


def gzip_single_stream_bomb(mib: int) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = EMPTY_MEMBER * MEMBERS_PER_MIB
    return b"".join(co.compress(chunk) for _ in range(mib)) + co.flush()


class PeakRss:
    """Samples this process's RSS every 5 ms while active; `.increase` is the peak above the start."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def increase(self) -> int:
        return self.peak - self.start


@pytest.mark.parametrize("make,mib", [(bz2_bomb, 1000), (gzip_bomb, 400), (gzip_single_stream_bomb, 256)],
                         ids=["bz2-2M-members", "gzip-800k-members", "gzip-single-stream"])
def test_archive_bombs_are_refused_quickly_in_bounded_memory(make, mib):
    bomb = make(mib)
    assert len(bomb) <= LIMIT
    t0 = time.monotonic()
    with PeakRss() as rss, pytest.raises(BundleRejected) as err:
        Bundle.from_archive(bomb, LIMIT)
    elapsed = time.monotonic() - t0
    print(f"{make.__name__}: {len(bomb)} bytes, {mib * MEMBERS_PER_MIB} members, rejected in {elapsed:.3f} s "
          f"({err.value.code}), RSS +{rss.increase / 2**20:.1f} MiB")
    assert err.value.code in ("bad_archive", "too_large")
    assert elapsed < 2.0
    assert rss.increase < 32 * 2**20


def _tar(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BUNDLE = [("manifest.json", b"{}"), ("model.tflite", b"x" * 1000), ("signature.json", b"{}")]


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_and_tar_gz_are_read(mode):
    b = Bundle.from_archive(_tar(BUNDLE, mode), LIMIT)
    assert (b.manifest_bytes, b.model_bytes, b.signature_bytes) == (b"{}", b"x" * 1000, b"{}")
    again = Bundle.from_archive(b.to_archive(), LIMIT)
    assert again == b


@pytest.mark.parametrize("archive,code,words", [
    (_tar(BUNDLE, "w:bz2"), "bad_archive", "bz2"),
    (_tar(BUNDLE, "w:xz"), "bad_archive", "xz"),
    (_tar(BUNDLE + [(f"extra-{i}", b"") for i in range(20)]), "bad_archive", "members"),
    (_tar(BUNDLE + [("sub/manifest.json", b"{}")]), "bad_archive", "twice"),
    (_tar([("manifest.json", b" " * 300_000), *BUNDLE[1:]]), "too_large", "manifest.json"),
    (_tar([*BUNDLE[:2], ("signature.json", b"[" * 10_000)]), "too_large", "signature.json"),
    (_tar([("manifest.json", b"{}"), ("model.tflite", b"x" * (LIMIT + 1))], "w:gz"), "too_large", ""),
    (zlib.compress(b"x" * 5000), "bad_archive", ""),
    (b"\x1f\x8b" + b"\x00" * 100, "bad_archive", ""),
    (lzma.compress(b"x"), "bad_archive", "xz"),
])
def test_odd_archives_are_refused_with_a_clear_code(archive, code, words):
    with pytest.raises(BundleRejected) as err:
        Bundle.from_archive(archive, LIMIT)
    assert err.value.code == code, err.value.message
    assert words in err.value.message


def test_bombs_through_the_api(agent_with_api):
    """Through the real API (max_bundle_bytes 300000 in the fixture): refused within a second, agent fine."""
    client = AgentClient(agent_with_api.components["api"].url, TOKEN, timeout=30)
    for bomb in (bz2_bomb(1000), gzip_bomb(60)):
        assert len(bomb) <= 300_000
        t0 = time.monotonic()
        with pytest.raises(ApiError) as err:
            client.push_archive(bomb)
        assert err.value.code in ("bad_archive", "too_large") and time.monotonic() - t0 < 1.5, err.value
    assert client.status()["models"]["cnn-1"]["active"] is None
