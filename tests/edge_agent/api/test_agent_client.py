"""AgentClient (used by the server): never follows a redirect with the token, checks answers against the documented
shape, and verifies the agent's TLS certificate (a self-signed one given as ca_file)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.agent_client import AgentClient, ApiError
from tests.helpers.agent import start_agent
from tests.helpers.models import TOKEN, agent_config
from tests.helpers.tls import self_signed

GOOD_STATUS = {"agent_version": "0.1.0", "interpreter": {"name": "ai-edge-litert", "version": "2.3.0"},
               "models": {"cnn-1": {"active": {"version": "20260101T000000Z", "sha256": "ab" * 32,
                                               "activated_at": "2026-01-01T00:00:00Z"}, "previous": None}},
               "last_forecast": None, "counters": {"received": 3, "uptime_s": 1.5}}


class _Fake:
    """A real HTTP server on loopback that answers every request with a fixed status, headers and body, and
    records the requests it got (path and Authorization header)."""

    def __init__(self, status: int = 200, body: bytes = b"", headers: dict | None = None):
        self.requests: list[tuple[str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                fake.requests.append((self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers: list[_Fake] = []

    def make(*args, **kwargs) -> _Fake:
        servers.append(_Fake(*args, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_with_the_token(fake, code):
    thief = fake(200, json.dumps(GOOD_STATUS).encode())
    redirector = fake(code, b"", {"Location": thief.url + "/api/v1/status"})
    client = AgentClient(redirector.url, TOKEN)
    with pytest.raises(ApiError) as err:
        client.status()
    assert err.value.status == code and err.value.code == "redirect"
    assert thief.url in err.value.message
    assert thief.requests == []  # the token never left for the redirect target
    with pytest.raises(ApiError) as err:
        client.push_archive(b"\x1f\x8b")
    assert err.value.code == "redirect" and thief.requests == []


@pytest.mark.parametrize("body,why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "object"),
    (json.dumps({**GOOD_STATUS, "agent_version": 3}).encode(), "agent_version"),
    (json.dumps({k: v for k, v in GOOD_STATUS.items() if k != "models"}).encode(), "models"),
    (json.dumps({**GOOD_STATUS, "models": {"cnn-1": {"active": "x", "previous": None}}}).encode(), "cnn-1"),
    (json.dumps({**GOOD_STATUS, "models": {"cnn-1": {"active": {"version": 1}, "previous": None}}}).encode(),
     "cnn-1"),
    (json.dumps({**GOOD_STATUS, "interpreter": None}).encode(), "interpreter"),
    (json.dumps({**GOOD_STATUS, "counters": {"received": "many"}}).encode(), "counters"),
    (json.dumps({**GOOD_STATUS, "last_forecast": 5}).encode(), "last_forecast"),
    (json.dumps({**GOOD_STATUS, "pad": "x" * (2 << 20)}).encode(), "larger"),
])
def test_a_status_answer_of_the_wrong_shape_is_a_bad_response(fake, body, why):
    client = AgentClient(fake(200, body, {"Content-Type": "application/json"}).url, TOKEN, timeout=10)
    with pytest.raises(ApiError) as err:
        client.status()
    assert err.value.status == 200 and err.value.code == "bad_response", err.value
    assert why in err.value.message
    assert TOKEN not in err.value.message


def test_a_well_formed_status_passes(fake):
    assert AgentClient(fake(200, json.dumps(GOOD_STATUS).encode()).url, TOKEN, 10).status() == GOOD_STATUS


def test_push_answers_are_checked_too(fake):
    client = AgentClient(fake(200, b'{"name": "cnn-1"}').url, TOKEN)
    with pytest.raises(ApiError) as err:
        client.push_archive(b"\x1f\x8b")
    assert err.value.code == "bad_response" and "version" in err.value.message


def test_credentials_in_the_url_never_reach_messages():
    client = AgentClient("http://user:secret-pass@127.0.0.1:1", TOKEN, timeout=2)
    with pytest.raises(ApiError) as err:
        client.status()
    assert err.value.code == "unreachable" and "secret-pass" not in str(err.value)


# -- TLS ------------------------------------------------------------------------------------------------------
def test_tls_api_verified_against_its_certificate(tmp_path, mosquitto_session, influxd_session, influx_db_name,
                                                 server_keys):
    cert, key = self_signed(tmp_path / "tls")
    other, _ = self_signed(tmp_path / "other")
    cfg = agent_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name, server_keys,
                       api_extra=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\ntimeout_s = 2\n')
    agent = start_agent(cfg, components=("api",))
    try:
        url = agent.components["api"].url
        assert url.startswith("https://127.0.0.1:")
        assert AgentClient(url, TOKEN, 10, ca_file=str(cert)).status()["agent_version"]
        for client in (AgentClient(url, TOKEN, 10), AgentClient(url, TOKEN, 10, ca_file=str(other))):
            with pytest.raises(ApiError) as err:  # system CAs, or another certificate: not trusted
                client.status()
            assert err.value.status == 0 and err.value.code == "tls_error", err.value
        with pytest.raises(ApiError) as err:  # plain HTTP to the TLS port: refused, and the API keeps going
            AgentClient(url.replace("https://", "http://"), TOKEN, 5).status()
        assert err.value.status == 0 or err.value.status >= 400
        assert AgentClient(url, TOKEN, 10, ca_file=str(cert)).status()["agent_version"]
    finally:
        agent.stop()


@pytest.mark.parametrize("extra,key", [
    ('tls_cert_file = "{cert}"\n', "tls_key_file"),
    ('tls_key_file = "{key}"\n', "tls_cert_file"),
    ('tls_cert_file = "{key}"\ntls_key_file = "{key}"\n', "tls_cert_file"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "/nonexistent/key.pem"\n', "tls_key_file"),
    ("max_connections = 0\n", "max_connections"),
    ("timeout_s = 0\n", "timeout_s"),
    ("max_header_bytes = 10\n", "max_header_bytes"),
])
def test_api_config_errors_name_the_key(tmp_path, server_keys, extra, key):
    from edge_agent.api import parse_config
    from edge_agent.config import ConfigError, load_config

    cert, keyf = self_signed(tmp_path / "tls")
    cfg = agent_config(tmp_path, 1, "http://127.0.0.1:1", "db", server_keys,
                       api_extra=extra.format(cert=cert, key=keyf))
    with pytest.raises(ConfigError) as err:
        parse_config(load_config(cfg))
    assert key in str(err.value)
