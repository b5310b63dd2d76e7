"""Workstation server: Flask app (gunicorn), history pull, training jobs, model registry, push to edges.

The app is made by `server.factory.create_app`; importing this package loads nothing else, so that
`home-energy-server` without the `server` extra can say what to install instead of failing on `import flask`
(shared.extras).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from server.config import ServerConfig


def create_app(config: ServerConfig | None = None, start_worker: bool = False) -> Flask:
    """The app for `config` (default: load_config(), i.e. $SERVER_CONFIG); see server.factory."""
    from server.factory import create_app as build

    return build(config, start_worker)
