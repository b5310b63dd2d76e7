"""Where a secret comes from — one rule for the agent and the server (docs/architecture.md, "Secrets").

A secret `key` in a config section can be given three ways; the first that is set wins:
1. `key_file`: a file holding it (first line, surrounding whitespace stripped) — Ansible, Docker secrets;
2. `key_env`: the name of an environment variable holding it — systemd `Environment=`, compose;
3. `key`: the value itself (tests, quick starts; never commit one).
A `key_file` that cannot be read is an error naming the key, not a silent fallback to the next source.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_secret(value: str | None, file: str | None, env: str | None) -> str | None:
    """The secret from `file`, else from the environment variable named `env`, else `value`."""
    if file:
        return Path(file).read_text().strip()
    if env and os.environ.get(env):
        return os.environ[env]
    return value
