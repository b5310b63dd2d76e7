"""Input checks for the API and the page: every field is type-checked and a bad one is an ActionError (HTTP 400)
that names it, so no input can reach the code as a wrong type and end as a 500."""

from __future__ import annotations

import json
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = re.compile(r"[\x21-\x7e]+")


class ActionError(Exception):
    """A refused action: HTTP `status`, a `code`, a message and, for bad input, the `field` it is about."""

    def __init__(self, message: str, status: int = 400, code: str = "bad_request", field: str | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.field = message, status, code, field

    def json(self) -> dict:
        err = {"code": self.code, "message": self.message}
        if self.field:
            err["field"] = self.field
        return {"error": err}


def bad(field: str, message: str) -> ActionError:
    return ActionError(f"{field}: {message}", 400, "bad_request", field)


def only(doc: dict, allowed: set[str] | tuple[str, ...], prefix: str = "") -> None:
    """Refuse fields this action does not know (a typo would otherwise be silently ignored)."""
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise bad(prefix + unknown[0], f"unknown field; known: {', '.join(sorted(allowed)) or 'none'}")


def _missing(value) -> bool:
    return value is None or value == ""


def text(doc: dict, key: str, required: bool = False, max_len: int = 200, name: str | None = None) -> str | None:
    """A string without control characters (None when absent or empty, unless required)."""
    name = name or key
    value = doc.get(key)
    if _missing(value):
        if required:
            raise bad(name, "is required")
        return None
    if not isinstance(value, str):
        raise bad(name, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value or len(value) > max_len or _CONTROL.search(value):
        raise bad(name, f"must be 1 to {max_len} characters without control characters")
    return value


def token(doc: dict, key: str, required: bool = False, name: str | None = None) -> str | None:
    """A secret sent in an HTTP header: printable ASCII without spaces (nothing that could split the header)."""
    value = text(doc, key, required, 512, name)
    if value is not None and not _TOKEN.fullmatch(value):
        raise bad(name or key, "must be printable ASCII without spaces")
    return value


def integer(doc: dict, key: str, lo: int, hi: int, default: int | None = None, name: str | None = None) -> int | None:
    """A whole number in [lo, hi] (a JSON number, or digits from a form)."""
    name = name or key
    value = doc.get(key)
    if _missing(value):
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,12}\s*", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(name, f"must be a whole number, got {value!r:.40}")
    if not lo <= value <= hi:
        raise bad(name, f"must be between {lo} and {hi}, got {value}")
    return value


def flag(doc: dict, key: str, name: str | None = None) -> bool:
    """true/false (JSON), or a form's on/off/1/0/true/false."""
    value = doc.get(key)
    if _missing(value):
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false", "on", "off", "yes", "no"):
        return value.strip().lower() in ("1", "true", "on", "yes")
    raise bad(name or key, f"must be true or false, got {value!r:.40}")


def iso_time(doc: dict, key: str, required: bool = False) -> datetime | None:
    value = text(doc, key, required, 40)
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad(key, f"{value!r} is not an ISO 8601 time (e.g. 2023-06-01T00:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def str_list(doc: dict, key: str, max_items: int = 20, choices: tuple[str, ...] | None = None,
             max_len: int = 4096) -> list[str] | None:
    """A list of strings (a single string counts as a list of one)."""
    value = doc.get(key)
    if _missing(value) or value == []:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not 0 < len(items) <= max_items:
        raise bad(key, f"must be a string or a list of 1 to {max_items} strings")
    out = [text({key: v}, key, True, max_len) for v in items]
    if choices:
        for v in out:
            if v not in choices:
                raise bad(key, f"{v!r} is not one of {', '.join(choices)}")
    return out


def str_map(doc: dict, key: str, name: str | None = None) -> dict[str, str] | None:
    """A small object of string → string (InfluxDB tags)."""
    name = name or key
    value = doc.get(key)
    if _missing(value) or value == {}:
        return None
    if not isinstance(value, dict) or len(value) > 20:
        raise bad(name, "must be an object of up to 20 string values")
    return {text({"k": k}, "k", True, 200, f"{name} key"): text(value, k, True, 200, f"{name}.{k}") for k in value}


def url(doc: dict, key: str, required: bool = False, name: str | None = None) -> str | None:
    """An http(s)://host[:port][/path] URL: no credentials, query or fragment, a real port."""
    name = name or key
    value = text(doc, key, required, 500, name)
    if value is None:
        return None
    if any(c.isspace() for c in value):
        raise bad(name, "must not contain spaces")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise bad(name, f"{value!r} has no valid port (1-65535)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad(name, f"{value!r} must be http(s)://host:port")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise bad(name, "must not hold credentials (give them as their own fields)")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise bad(name, "must not have a query or a fragment")
    if port == 0:
        raise bad(name, f"{value!r} has no valid port (1-65535)")
    return value.rstrip("/")


def json_object(doc: dict, key: str) -> dict:
    """An object, or (from a form field) a JSON text of one; {} when absent."""
    value = doc.get(key)
    if _missing(value):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad(key, "must be a JSON object") from None
    if not isinstance(value, dict):
        raise bad(key, f"must be an object, got {type(value).__name__}")
    return value


def ca_file(doc: dict, key: str, api_url: str | None) -> str | None:
    """An absolute path to a PEM file of CA certificates (or the agent's self-signed certificate) that TLS can load,
    for an https agent URL only. The message never quotes the file's content."""
    value = text(doc, key, False, 1024)
    if value is None:
        return None
    if not api_url or urlsplit(api_url).scheme != "https":
        raise bad(key, "is for an https api_url only")
    path = Path(value)
    if not path.is_absolute():
        raise bad(key, f"must be an absolute path, got {value!r}")
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError, ValueError):
        raise bad(key, f"{value} is not a readable PEM file of CA certificates") from None
    return str(path)
