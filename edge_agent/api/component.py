"""The agent's model API: upload a signed bundle, read status, roll back, run a forecast (docs/edge-models.md).

Every request needs `Authorization: Bearer <token>` (compared in constant time). Bodies above the size limit
are refused before they are read. The HTTP server (edge_agent/api/httpserver.py) caps connections, drops idle
and slow ones and limits request heads, so nobody who reaches the port can exhaust the agent; TLS when
`tls_cert_file`/`tls_key_file` are set. Activation is all-or-nothing: a stored version that does not load from disk
is rolled back to the state before and answered with an error.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from edge_agent import __version__
from edge_agent.api.httpserver import BoundedHTTPServer, LimitedHandler, Limits
from edge_agent.component import AgentContext, ComponentSpec
from edge_agent.config import AgentConfig, ConfigError, build_dataclass, setting
from edge_agent.forecast import Forecaster
from edge_agent.models.store import StoredVersion
from edge_agent.models.verify import verify
from edge_agent.runtime.supervise import Worker
from edge_agent.runtime.timer import floor_slot
from shared.bundle import Bundle, BundleRejected
from shared.schema import BUNDLE_NAMES
from shared.secrets import read_secret
from shared.signing import public_key_from_text

log = logging.getLogger(__name__)


@dataclass
class ApiConfig:
    bind: str = "127.0.0.1"
    port: int = setting(8750, check=lambda v: 0 <= v <= 65535, wants="between 0 and 65535")
    token: str | None = None
    public_key: str | None = None
    max_bundle_bytes: int = setting(2 * 1024 * 1024, check=lambda v: 1024 <= v <= 64 * 2**20,
                                    wants="between 1 KiB and 64 MiB")
    allow_older: bool = False  # accept a version older than the active one without ?allow_older=1
    # open connections; beyond, the oldest one still sending its head is dropped
    max_connections: int = setting(8, check=lambda v: 1 <= v <= 1024, wants="between 1 and 1024")
    # to finish the TLS handshake and the request head; also for each send
    timeout_s: float = setting(10.0, check=lambda v: 0 < v <= 3600, wants="between 0 and 3600 (seconds)")
    # to send the body (a bundle) once the head is in
    body_timeout_s: float = setting(60.0, check=lambda v: 0 < v <= 3600, wants="between 0 and 3600 (seconds)")
    # request line + headers
    max_header_bytes: int = setting(8192, check=lambda v: 1024 <= v <= 65536, wants="between 1024 and 65536")
    tls_cert_file: str | None = None  # PEM certificate (chain); with tls_key_file: serve HTTPS
    tls_key_file: str | None = None

    def __repr__(self) -> str:
        return (f"ApiConfig(bind={self.bind!r}, port={self.port}, token=***, tls={bool(self.tls_cert_file)}, "
                f"max_bundle_bytes={self.max_bundle_bytes}, max_connections={self.max_connections}, "
                f"timeout_s={self.timeout_s})")

    @property
    def limits(self) -> Limits:
        return Limits(self.max_connections, self.timeout_s, self.body_timeout_s, self.max_header_bytes)


def tls_context(api: ApiConfig, where: str) -> ssl.SSLContext | None:
    """The server-side TLS context, or None without TLS; errors name the key."""
    if not api.tls_cert_file and not api.tls_key_file:
        return None
    if not (api.tls_cert_file and api.tls_key_file):
        missing = "tls_key_file" if api.tls_cert_file else "tls_cert_file"
        raise ConfigError(f"{where}.{missing}: TLS needs both tls_cert_file and tls_key_file")
    for key in ("tls_cert_file", "tls_key_file"):
        try:
            Path(getattr(api, key)).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}.{key}: cannot read {getattr(api, key)}: {exc.strerror}") from None
    try:
        ssl.create_default_context(cafile=api.tls_cert_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"{where}.tls_cert_file: {api.tls_cert_file} is not a PEM certificate: {exc}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(api.tls_cert_file, api.tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"{where}.tls_key_file: {api.tls_key_file} is not the private key of tls_cert_file "
                          f"({exc})") from None
    return ctx


def parse_config(cfg: AgentConfig) -> ApiConfig | None:
    """The [api] section, validated; None when it is absent."""
    if "api" not in cfg.raw:
        return None
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
    tls_context(api, where)
    return api


class ModelApi:
    def __init__(self, api: ApiConfig, ctx: AgentContext):
        self.config, self.api, self.ctx = ctx.config, api, ctx
        self.trusted = public_key_from_text(api.public_key)
        self.models = ctx.models()
        self._upload_lock = threading.Lock()
        where = f"{self.config.path}: [api]"
        tls = tls_context(api, where)
        try:
            self.server = BoundedHTTPServer((api.bind, api.port), self._handler(), api.limits, tls,
                                            on_event=ctx.health.incr)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot listen on {api.bind}:{api.port} (bind, port): {exc.strerror}") from None
        self._thread: threading.Thread | None = None

    @property
    def forecaster(self) -> Forecaster | None:
        """The forecast component, if the agent runs one (the API works without it)."""
        fc = self.ctx.components.get("forecast")
        return fc if isinstance(fc, Forecaster) else None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        scheme = "https" if self.server.ssl_context else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    # -- actions ------------------------------------------------------------------------------------------
    def status(self) -> dict:
        m, f = self.models, self.forecaster
        models = {n: {"active": None, "previous": None} for n in BUNDLE_NAMES}
        models.update(m.store.status())
        live = f.skill_status() if f else {"skill": None, "guard": None}  # live skill and the guard's verdicts
        return {"agent_version": __version__,
                "interpreter": {"name": m.runtime.name, "version": m.runtime.version},
                "models": models, "last_forecast": f.last_forecast if f else None,
                "counters": self.ctx.health.snapshot(), "skill": live["skill"], "guard": live["guard"],
                "calendar": f.calendar_status() if f else None,
                **{name: part() for name, part in self.ctx.status_parts.items()}}

    def _intact(self, entry: StoredVersion) -> bool:
        try:
            self.models.store.check(entry)
        except ValueError as exc:
            log.warning("active %s %s is damaged on disk: %s", entry.name, entry.version, exc)
            return False
        return self.models.holds(entry)

    def _switch(self, name: str, before: dict, entry: StoredVersion, what: str) -> None:
        """After the store switched `name` to `entry`: load it, or put the state `before` back and refuse."""
        m = self.models
        if m.reload(name) and m.holds(entry):
            m.store.prune(name)
            return
        m.store.restore(name, before)
        m.reload(name)
        kept = (before.get("active") or {}).get("version") or "no version"
        raise BundleRejected("activation_failed", f"{name} {entry.version} was {what} but does not load from disk "
                                                  f"(see the agent's log); {kept} stays active", 500)

    def upload(self, body: bytes, allow_older: bool) -> dict:
        bundle = Bundle.from_archive(body, self.api.max_bundle_bytes)
        m, f = self.models, self.forecaster
        issue_ns = None
        recent = None
        if f is not None:
            try:
                issue_ns = floor_slot(self.ctx.clock())
                recent = f.read_series(issue_ns)
            except Exception as exc:  # no database: smoke run on a typical window instead
                log.warning("upload: no recent window for the smoke run (%s)", exc)
        with self._upload_lock:
            doc, _model = verify(bundle, self.trusted, m.runtime, recent, issue_ns)
            name, version = doc["name"], doc["version"]
            active = m.store.active(name)
            if active and active.version == version and active.sha256 == doc["model"]["sha256"] \
                    and self._intact(active):
                return {"name": name, "version": version, "status": "unchanged"}
            if active and version < active.version and not (allow_older or self.api.allow_older):
                raise BundleRejected("older_version", f"{name} {version} is older than the active {active.version}; "
                                                      "push with ?allow_older=1 to install it anyway (or roll back)",
                                     409)
            before = m.store.state(name)
            try:
                entry = m.store.activate(name, version, bundle.manifest_bytes, bundle.model_bytes,
                                         bundle.signature_bytes or b"", prune=False)
            except OSError as exc:  # nothing switched: the state is replaced last, atomically
                raise BundleRejected("activation_failed", f"cannot store {name} {version}: {exc}", 500) from None
            self._switch(name, before, entry, "stored")
        self.ctx.health.incr("models_activated")
        log.info("model %s version %s activated", name, version)
        self._forecast_soon()
        return {"name": name, "version": version, "status": "active"}

    def rollback(self, name: str) -> dict:
        m = self.models
        if name not in m.store.names():
            raise BundleRejected("unknown_model", f"no model named {name!r}", 404)
        with self._upload_lock:
            before = m.store.state(name)
            try:
                entry = m.store.rollback(name)
            except ValueError as exc:
                raise BundleRejected("previous_damaged", f"cannot roll back: {exc}; the active version stays (push "
                                                         "the previous version again to repair it)", 409) from None
            if entry is None:
                raise BundleRejected("no_previous", f"{name} has no previous version to roll back to", 409)
            self._switch(name, before, entry, "made active again")
        log.info("model %s rolled back to %s", name, entry.version)
        self._forecast_soon()
        return {"name": name, "version": entry.version, "status": "active"}

    def forecast_now(self) -> dict:
        f = self.forecaster
        if f is None:
            raise BundleRejected("forecast_not_configured", "this agent has no [forecast] section", 409)
        results = f.run_once()
        return {"issued_at": f.last_forecast,
                "forecasts": [{"name": r.name, "model": r.model, "version": r.version, "horizon": r.horizon,
                               "values": len(r.values), "fallback": r.fallback or None,
                               "input_complete": r.input_complete, "shadow": r.shadow} for r in results]}

    def _forecast_soon(self) -> None:
        """A new model forecasts at once (on the slot timer's thread), not 15 minutes later."""
        if self.forecaster is not None:
            self.ctx.timer.trigger("forecast", 0.0, boundary=floor_slot(self.ctx.clock()))

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _handler(self) -> type[LimitedHandler]:
        api = self

        class Handler(LimitedHandler):
            server_version = "edge-agent"

            def _send(self, status: int, doc: dict) -> None:
                body = (json.dumps(doc) + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
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

            def _body(self, length: int) -> bytes | None:
                try:
                    body = self.rfile.read(length)
                except TimeoutError:
                    self._error(408, "timeout", f"the body did not arrive within {api.api.body_timeout_s} s")
                    return None
                if len(body) < length:
                    self._error(400, "bad_request", f"the body ended after {len(body)} of {length} bytes")
                    return None
                return body

            def _route(self, method: str) -> None:
                path = urlsplit(self.path)
                query = parse_qs(path.query)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    return self._error(400, "bad_request", "invalid Content-Length")
                if not self._authorized():
                    return None
                try:
                    if method == "GET" and path.path == "/api/v1/status":
                        return self._send(200, api.status())
                    if method == "POST" and path.path == "/api/v1/models":
                        if length > api.api.max_bundle_bytes:
                            return self._error(413, "too_large", f"bundle of {length} bytes exceeds the limit of "
                                                                 f"{api.api.max_bundle_bytes}")
                        body = self._body(length)
                        if body is None:
                            return None
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
        # supervised like ingest's workers: if the accept loop ever fails, it is counted and restarted
        self._stopping = threading.Event()
        self._worker = Worker("model_api", self.server.serve_forever, self._stopping, self.ctx.health.thread_failed)
        self._worker.start()
        self._thread = self._worker.thread
        log.info("model API listening on %s (at most %d connections, %g s to send a request)", self.url,
                 self.api.max_connections, self.api.timeout_s)

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self.server.shutdown()
            self._thread = None
        self.server.server_close()
        self.server.close_all()


SPEC = ComponentSpec("api", parse_config, ModelApi)
