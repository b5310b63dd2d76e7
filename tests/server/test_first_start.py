"""First start under gunicorn with 4 workers on an empty data dir: every start succeeds, all workers share one
signing key and one session key, and the server's files are private (0600 files, 0700 directories)."""

from __future__ import annotations

import stat

import pytest
import requests

from shared import signing
from tests.helpers.server import API_TOKEN, start_gunicorn, web_login

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("attempt", range(3))
def test_first_start_with_four_workers(tmp_path, attempt):
    data = tmp_path / "fresh" / "server"
    with start_gunicorn(tmp_path / "g", workers=4, data_dir=data) as server:
        # fresh connections land on different workers: all must sign with the key on disk
        ids = {requests.get(f"{server.url}/api/v1/status", headers=AUTH, timeout=30).json()["key_id"]
               for _ in range(24)}
        assert ids == {signing.load_private_key(data / "keys" / "signing.key").key_id}
        # a session made by one worker is valid on all of them (one session key)
        s, r = web_login(server.url)
        assert r.status_code == 302
        assert all(s.get(f"{server.url}/api/v1/nodes", timeout=30, headers={"Connection": "close"}).status_code == 200
                   for _ in range(12))
        assert not list((data / "keys").glob("*.tmp"))
    assert mode(data) == 0o700
    for d in ("keys", "registry", "cache", "uploads"):
        assert mode(data / d) == 0o700, d
    for f in ("server.sqlite", "server.sqlite-wal", "server.sqlite-shm", "secret_key", "keys/signing.key"):
        if (data / f).exists() or not f.endswith(("-wal", "-shm")):
            assert mode(data / f) == 0o600, f
    assert "Worker failed to boot" not in server.log.read_text(errors="replace")


def test_an_existing_data_dir_is_made_private(tmp_path):
    """Files an older version left world-readable are tightened on start."""
    data = tmp_path / "server"
    data.mkdir(mode=0o755)
    (data / "server.sqlite").touch(mode=0o644)
    (data / "server.sqlite").chmod(0o644)
    data.chmod(0o755)
    with start_gunicorn(tmp_path / "g", data_dir=data, job_worker=False):
        pass
    assert mode(data) == 0o700 and mode(data / "server.sqlite") == 0o600
