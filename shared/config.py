"""One validator for both halves' configuration files: a dataclass per table, filled from the parsed document.

The agent (edge_agent/config.py and each component's own section) and the server (server/config.py) describe their
settings as dataclasses; `build_dataclass` fills one from a TOML/YAML table and refuses what a person would otherwise
never notice: an unknown key (a typo), a value of the wrong type, a value out of range. Every error is a
`ConfigError` naming the file and the key. A field's range check sits on the field itself (`setting`), next to its
default, so that the two cannot drift apart. No dependencies: a bare agent install imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            check: Callable[[Any], bool] | None = None, wants: str = "") -> Any:
    """A dataclass field whose value `build_dataclass` also checks: `check(value)` must hold, else the error says
    the key must be `wants` (e.g. "≥ 1", "between 0 and 5")."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"check": check, "wants": wants})


def key_name(where: str, key: str) -> str:
    """How an error names a key: `file: [mqtt].qos` in a table, `server config file: api_token` at the top."""
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _type_ok(expected: str, value: Any) -> tuple[bool, Any]:
    """Whether `value` has the annotated type (by the annotation's text); ints are taken for floats."""
    if expected.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool), value
    if expected.startswith("float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if expected.startswith("bool"):
        return isinstance(value, bool), value
    if expected.startswith(("str", "Path")):
        return isinstance(value, str), value
    if expected.startswith(("list[str]", "list[Path]")):
        return isinstance(value, list) and all(isinstance(v, str) for v in value), value
    if expected.startswith("list"):
        return isinstance(value, list), value
    if expected.startswith("dict"):
        return isinstance(value, dict), value
    return True, value


def build_dataclass(cls, data: Any, where: str, **fixed: Any):
    """Fill dataclass `cls` from a mapping, rejecting unknown keys, wrong types and values out of range with the
    key's name. `fixed` are fields the caller resolved itself (paths, secrets, sub-tables): not read from `data`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip(':')} must be a table/mapping")
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in fixed}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{where.rstrip(':')}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    kwargs = dict(fixed)
    for name, value in data.items():
        f = known[name]
        expected = f.type if isinstance(f.type, str) else str(f.type)
        if value is None:  # YAML's null (TOML has none): only where the type admits it or it is the default
            if "None" not in expected and f.default is not None:
                raise ConfigError(f"{key_name(where, name)}: expected {expected.split(' ')[0]}, got None")
        else:
            ok, value = _type_ok(expected, value)
            if not ok:
                raise ConfigError(f"{key_name(where, name)}: expected {expected.split(' ')[0]}, got {value!r}")
            check = f.metadata.get("check")
            if check is not None and not check(value):
                raise ConfigError(f"{key_name(where, name)} must be {f.metadata['wants']}, not {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where.rstrip(':')}: {exc}") from None
