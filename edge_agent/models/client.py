"""Client for the agent's model API (used by `python -m edge_agent models …` and by the server)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path


class ApiError(Exception):
    """The agent refused the request (`code`, `message`, HTTP `status`) or could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class AgentClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> dict:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())["error"]
                raise ApiError(exc.code, err["code"], err["message"]) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(exc.code, "http_error", str(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "unreachable", f"agent API at {self.url} unreachable: {reason}") from None

    def status(self) -> dict:
        return self._call("GET", "/api/v1/status")

    def push_archive(self, archive: bytes, allow_older: bool = False) -> dict:
        q = "?allow_older=1" if allow_older else ""
        return self._call("POST", f"/api/v1/models{q}", archive, "application/gzip")

    def push(self, bundle_dir: Path, allow_older: bool = False) -> dict:
        from edge_agent.models.api import bundle_archive

        return self.push_archive(bundle_archive(Path(bundle_dir)), allow_older)

    def rollback(self, name: str) -> dict:
        return self._call("POST", f"/api/v1/models/{name}/rollback", b"")

    def forecast_now(self) -> dict:
        return self._call("POST", "/api/v1/forecast/run", b"")
