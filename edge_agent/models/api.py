"""The agent's model API: upload a signed bundle, read status, roll back, run a forecast (docs/edge-models.md).

Every request needs `Authorization: Bearer <token>` (compared in constant time). Bodies above the size limit
are refused before they are read.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from edge_agent import __version__
from edge_agent.config import AgentConfig, ConfigError, build_dataclass
from edge_agent.models.bundle import Bundle, BundleRejected, verify
from edge_agent.schedule import floor_slot
from edge_agent.storage.base import read_secret
from shared import manifest as mf
from shared.signing import public_key_from_text

log = logging.getLogger(__name__)


@dataclass
class ApiConfig:
    bind: str = "127.0.0.1"
    port: int = 8750
    token: str | None = None
    public_key: str | None = None
    max_bundle_bytes: int = 2 * 1024 * 1024
    allow_older: bool = False  # accept a version older than the active one without ?allow_older=1

    def __repr__(self) -> str:
        return f"ApiConfig(bind={self.bind!r}, port={self.port}, token=***, max_bundle_bytes={self.max_bundle_bytes})"


def parse_config(cfg: AgentConfig) -> ApiConfig:
    doc = dict(cfg.section("api"))
    where = f"{cfg.path}: [api]"
    try:
        token = read_secret(doc.pop("token", None), doc.pop("token_file", None), doc.pop("token_env", None))
        key = read_secret(doc.pop("public_key", None), doc.pop("public_key_file", None),
                          doc.pop("public_key_env", None))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read a secret file: {exc}") from None
    api = build_dataclass(ApiConfig, doc, where)
    api.token, api.public_key = token, key
    if not api.token or len(api.token) < 16:
        raise ConfigError(f"{where}: a token of at least 16 characters is required (token_file or token_env)")
    if not api.public_key:
        raise ConfigError(f"{where}: public_key (the server's Ed25519 key, base64) is required")
    try:
        public_key_from_text(api.public_key)
    except ValueError as exc:
        raise ConfigError(f"{where}.public_key: {exc}") from None
    return api


def validate_config(cfg: AgentConfig) -> None:
    if "api" in cfg.raw:
        parse_config(cfg)


class ModelApi:
    def __init__(self, config: AgentConfig, api: ApiConfig, ctx):
        from edge_agent.forecast import ForecastConfig, Forecaster

        self.config, self.api, self.ctx = config, api, ctx
        self.trusted = public_key_from_text(api.public_key)
        forecaster = ctx.components.get("edge_agent.forecast")
        if forecaster is None:  # the API works without the forecast loop: it still needs a store and runtime
            forecaster = Forecaster(config, ForecastConfig(), ctx)
            self._own_forecaster = True
        else:
            self._own_forecaster = False
        self.forecaster: Forecaster = forecaster
        self._upload_lock = threading.Lock()
        self.server = ThreadingHTTPServer((api.bind, api.port), self._handler())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # -- actions ------------------------------------------------------------------------------------------
    def status(self) -> dict:
        f = self.forecaster
        models = {n: {"active": None, "previous": None} for n in ("cnn-1", "lstm-1", "cnn-96", "lstm-96")}
        models.update(f.store.status())
        return {"agent_version": __version__,
                "interpreter": {"name": f.runtime.name, "version": f.runtime.version},
                "models": models, "last_forecast": f.last_forecast, "counters": self.ctx.health.snapshot()}

    def upload(self, body: bytes, allow_older: bool) -> dict:
        bundle = Bundle.from_archive(body, self.api.max_bundle_bytes)
        f = self.forecaster
        issue_ns = None
        recent = None
        try:
            issue_ns = floor_slot(self.ctx.clock())
            recent = f.read_series(issue_ns)
        except Exception as exc:  # no database: smoke run on a typical window instead
            log.warning("upload: no recent window for the smoke run (%s)", exc)
        with self._upload_lock:
            doc, _model = verify(bundle, self.trusted, f.runtime, recent, issue_ns)
            name, version = doc["name"], doc["version"]
            active = f.store.active(name)
            if active and active.version == version:
                return {"name": name, "version": version, "status": "unchanged"}
            if active and version < active.version and not (allow_older or self.api.allow_older):
                raise BundleRejected("older_version", f"{name} {version} is older than the active {active.version}; "
                                                      "push with ?allow_older=1 to install it anyway (or roll back)",
                                     409)
            f.store.activate(name, version, bundle.manifest_bytes, bundle.model_bytes, bundle.signature_bytes or b"")
            f.reload(name)
        self.ctx.health.incr("models_activated")
        log.info("model %s version %s activated", name, version)
        self._forecast_soon()
        return {"name": name, "version": version, "status": "active"}

    def rollback(self, name: str) -> dict:
        f = self.forecaster
        if name not in f.store.names():
            raise BundleRejected("unknown_model", f"no model named {name!r}", 404)
        with self._upload_lock:
            entry = f.store.rollback(name)
            if entry is None:
                raise BundleRejected("no_previous", f"{name} has no previous version to roll back to", 409)
            f.reload(name)
        log.info("model %s rolled back to %s", name, entry.version)
        self._forecast_soon()
        return {"name": name, "version": entry.version, "status": "active"}

    def forecast_now(self) -> dict:
        results = self.forecaster.run_once()
        return {"issued_at": self.forecaster.last_forecast,
                "forecasts": [{"name": r.name, "model": r.model, "version": r.version, "horizon": r.horizon,
                               "values": len(r.values)} for r in results]}

    def _forecast_soon(self) -> None:
        if not self._own_forecaster:
            threading.Thread(target=self._safe_forecast, daemon=True).start()

    def _safe_forecast(self) -> None:
        try:
            self.forecaster.run_once()
        except Exception:
            log.exception("forecast after activation failed")

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edge-agent"
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # requests at debug level, never the token
                log.debug("%s %s", self.address_string(), fmt % args)

            def _send(self, status: int, doc: dict) -> None:
                body = (json.dumps(doc) + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, code: str, message: str) -> None:
                self._send(status, {"error": {"code": code, "message": message}})

            def _authorized(self) -> bool:
                header = self.headers.get("Authorization", "")
                given = header[7:] if header.startswith("Bearer ") else ""
                if hmac.compare_digest(given.encode(), api.api.token.encode()):
                    return True
                api.ctx.health.incr("api_unauthorized")
                self._error(401, "unauthorized", "missing or wrong bearer token")
                return False

            def _route(self, method: str) -> None:
                path = urlsplit(self.path)
                query = parse_qs(path.query)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    self.close_connection = True
                    return self._error(400, "bad_request", "invalid Content-Length")
                if not self._authorized():
                    self.close_connection = True
                    return None
                try:
                    if method == "GET" and path.path == "/api/v1/status":
                        return self._send(200, api.status())
                    if method == "POST" and path.path == "/api/v1/models":
                        if length > api.api.max_bundle_bytes:
                            self.close_connection = True
                            return self._error(413, "too_large", f"bundle of {length} bytes exceeds the limit of "
                                                                 f"{api.api.max_bundle_bytes}")
                        body = self.rfile.read(length)
                        allow = query.get("allow_older", ["0"])[0] in ("1", "true")
                        return self._send(200, api.upload(body, allow))
                    parts = path.path.strip("/").split("/")
                    if method == "POST" and len(parts) == 5 and parts[:3] == ["api", "v1", "models"] \
                            and parts[4] == "rollback":
                        return self._send(200, api.rollback(parts[3]))
                    if method == "POST" and path.path == "/api/v1/forecast/run":
                        return self._send(200, api.forecast_now())
                    return self._error(404, "not_found", f"no route {method} {path.path}")
                except BundleRejected as exc:
                    api.ctx.health.incr(f"bundle_rejected_{exc.code}")
                    log.warning("bundle rejected (%s): %s", exc.code, exc.message)
                    return self._error(exc.status, exc.code, exc.message)
                except Exception as exc:
                    log.exception("API error")
                    return self._error(500, "internal", str(exc))

            def do_GET(self):  # noqa: N802
                self._route("GET")

            def do_POST(self):  # noqa: N802
                self._route("POST")

        return Handler

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="model-api", daemon=True)
        self._thread.start()
        log.info("model API listening on %s", self.url)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def build(config: AgentConfig, ctx) -> ModelApi | None:
    if "api" not in config.raw:
        return None
    return ModelApi(config, parse_config(config), ctx)


def bundle_archive(bundle_dir: Path) -> bytes:
    """A tar.gz of a bundle directory, as the API expects (used by the client)."""
    d = Path(bundle_dir)
    sig = d / "signature.json"
    return Bundle((d / mf.MANIFEST_FILE).read_bytes(), (d / mf.MODEL_FILE).read_bytes(),
                  sig.read_bytes() if sig.exists() else None).to_archive()
