"""Client for the agent's model API (used by `python -m edge_agent models …` and by the server).

Every request carries the bearer token, so the client never follows a redirect (a 3xx is an ApiError naming the
target), verifies TLS against `ca_file` (the agent's self-signed certificate, or its CA) or the system CAs, reads
at most MAX_RESPONSE_BYTES, and checks answers against the documented shapes (docs/architecture.md, "Agent model
API"): what a node says is data to check, not to trust. Messages never contain the token or URL credentials.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MAX_RESPONSE_BYTES = 1 << 20


class ApiError(Exception):
    """The agent refused the request (`code`, `message`, HTTP `status`) or could not be reached (status 0).
    Codes of the client itself: unreachable, tls_error, redirect, bad_response, bad_url, http_error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx status


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


# -- answer shapes ------------------------------------------------------------------------------------------------
def _bad(status: int, what: str) -> ApiError:
    return ApiError(status, "bad_response", f"the agent's answer does not have the documented shape: {what}")


def _need(doc: dict, key: str, types, status: int, where: str = "", nullable: bool = False):
    if key not in doc:
        raise _bad(status, f"{where}{key} is missing")
    value = doc[key]
    if value is None and nullable:
        return None
    if not isinstance(value, types) or isinstance(value, bool):  # no shape here expects a bool
        raise _bad(status, f"{where}{key} is {type(value).__name__}")
    return value


def check_status(doc, status: int = 200) -> dict:
    """GET /api/v1/status: {agent_version, interpreter{name, version}, models{name: {active, previous}},
    last_forecast, counters{name: number}}; active/previous are null or {version, sha256, activated_at}."""
    if not isinstance(doc, dict):
        raise _bad(status, "not a JSON object")
    _need(doc, "agent_version", str, status)
    interp = _need(doc, "interpreter", dict, status)
    _need(interp, "name", str, status, "interpreter.")
    _need(interp, "version", str, status, "interpreter.")
    models = _need(doc, "models", dict, status)
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise _bad(status, f"models.{name} is {type(entry).__name__}")
        for slot in ("active", "previous"):
            v = _need(entry, slot, dict, status, f"models.{name}.", nullable=True)
            if v is not None:
                for key in ("version", "sha256", "activated_at"):
                    _need(v, key, str, status, f"models.{name}.{slot}.")
    _need(doc, "last_forecast", str, status, nullable=True)
    counters = _need(doc, "counters", dict, status)
    for name, value in counters.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _bad(status, f"counters.{name} is {type(value).__name__}")
    return doc


def check_activation(doc, status: int = 200) -> dict:
    """POST /api/v1/models and …/rollback: {name, version, status}."""
    if not isinstance(doc, dict):
        raise _bad(status, "not a JSON object")
    for key in ("name", "version", "status"):
        _need(doc, key, str, status)
    return doc


def check_forecast(doc, status: int = 200) -> dict:
    """POST /api/v1/forecast/run: {issued_at, forecasts: [...]}."""
    if not isinstance(doc, dict):
        raise _bad(status, "not a JSON object")
    _need(doc, "issued_at", str, status, nullable=True)
    for i, f in enumerate(_need(doc, "forecasts", list, status)):
        if not isinstance(f, dict):
            raise _bad(status, f"forecasts[{i}] is {type(f).__name__}")
    return doc


class AgentClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0, *, ca_file: str | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._where = _without_credentials(self.url)
        handlers: list = [_NoRedirect()]
        if urlsplit(self.url).scheme == "https":
            try:
                handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file)))
            except (OSError, ssl.SSLError) as exc:
                raise ApiError(0, "tls_error", f"cannot read ca_file {ca_file}: {exc}") from None
        self._opener = urllib.request.build_opener(*handlers)

    def _read(self, response, status: int) -> bytes:
        data = response.read(MAX_RESPONSE_BYTES + 1)
        if len(data) > MAX_RESPONSE_BYTES:
            raise _bad(status, f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        return data

    def _call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> dict:
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ApiError(0, "bad_url", f"the agent API URL {self._where!r} is not http(s)")
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                status = r.status
                data = self._read(r, status)
        except urllib.error.HTTPError as exc:
            with exc:
                if 300 <= exc.code < 400:
                    target = _without_credentials(exc.headers.get("Location", "") or "")[:300]
                    raise ApiError(exc.code, "redirect", f"the agent API at {self._where} answered {exc.code} "
                                                         f"redirecting to {target!r}; redirects are not followed "
                                                         "(the request carries the token)") from None
                try:
                    err = json.loads(self._read(exc, exc.code))["error"]
                    code, message = err["code"], err["message"]
                    if not isinstance(code, str) or not isinstance(message, str):
                        raise TypeError
                except (ValueError, KeyError, TypeError, OSError):
                    raise ApiError(exc.code, "http_error", f"HTTP {exc.code} from {self._where}") from None
                raise ApiError(exc.code, code[:100], message[:2000]) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                raise ApiError(0, "tls_error", f"TLS with the agent API at {self._where} failed: {reason}") from None
            raise ApiError(0, "unreachable", f"agent API at {self._where} unreachable: {reason}") from None
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise _bad(status, "not JSON") from None

    def status(self) -> dict:
        return check_status(self._call("GET", "/api/v1/status"))

    def push_archive(self, archive: bytes, allow_older: bool = False) -> dict:
        q = "?allow_older=1" if allow_older else ""
        return check_activation(self._call("POST", f"/api/v1/models{q}", archive, "application/gzip"))

    def push(self, bundle_dir: Path, allow_older: bool = False) -> dict:
        from shared.bundle import bundle_archive

        return self.push_archive(bundle_archive(Path(bundle_dir)), allow_older)

    def rollback(self, name: str) -> dict:
        return check_activation(self._call("POST", f"/api/v1/models/{name}/rollback", b""))

    def forecast_now(self) -> dict:
        return check_forecast(self._call("POST", "/api/v1/forecast/run", b""))
