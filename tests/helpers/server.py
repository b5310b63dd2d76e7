"""Server-test helpers: the test credentials, a server config in a temp dir, real gunicorn, a browser-like login,
a foreign HTTP service (what a node URL may point at instead of an agent)."""

from __future__ import annotations

import re
import time

from werkzeug.security import generate_password_hash

from server.config import load_config
from tests.conftest import SEED_CSV

PASSWORD = "correct horse battery"
API_TOKEN = "server-api-token-0123456789"


def job_finished(client, job: dict, timeout: float = 300, interval: float = 0.05) -> dict:
    """Poll a job through the API (a Flask test client) until it is neither queued nor running; the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job['id']}", headers=AUTH).json
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(interval)
    raise AssertionError(f"job {job['id']} did not finish within {timeout} s: {job}")


def server_config(tmp_path, **extra):
    """A server in tmp_path that may train on the repository's seed data (training_data_dirs)."""
    extra.setdefault("training_data_dirs", [str(SEED_CSV.parent)])
    return load_config(None, data_dir=str(tmp_path / "server"), admin_password_hash=generate_password_hash(PASSWORD),
                       api_token=API_TOKEN, session_cookie_secure=False, status_poll_s=3600, **extra)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


# -- real gunicorn and a foreign HTTP service, for the security tests ---------------------------------------------
def start_gunicorn(workdir, extra_config: str = "", workers: int = 2, job_worker: bool = True, data_dir=None):
    """The server under real gunicorn on loopback (plain HTTP, so cookies without `Secure`)."""
    from tools.services import Gunicorn

    return Gunicorn(workdir, generate_password_hash(PASSWORD), API_TOKEN, data_dir=data_dir, workers=workers,
                    extra_env={"SERVER_JOB_WORKER": "1" if job_worker else "0"},
                    extra_config="session_cookie_secure = false\nstatus_poll_s = 3600\n" + extra_config).start()


def web_login(base: str, password: str = PASSWORD, next_path: str | None = None, headers: dict | None = None):
    """Log in through the form like a browser; returns (requests.Session, the POST /login response)."""
    import requests

    s = requests.Session()
    if headers:
        s.headers.update(headers)
    csrf = csrf_of(s.get(f"{base}/login", timeout=30).text)
    r = s.post(f"{base}/login", params={"next": next_path} if next_path else None, timeout=30,
               data={"username": "admin", "password": password, "csrf_token": csrf}, allow_redirects=False)
    s.csrf = csrf
    return s, r


class ForeignService:
    """A plain HTTP server on loopback that answers every request with one fixed answer: what a node URL may point
    at instead of an agent (another service on the LAN). It records the requests it got."""

    def __init__(self, status: int = 200, body: bytes = b"{}", content_type: str = "application/json",
                 headers: dict | None = None):
        import http.server
        import threading

        outer = self
        self.requests: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
