"""What the pages, the API and the job worker share: the config, the database, the signing key and the registry."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import current_app

from server.config import ServerConfig
from server.db import Database
from server.files import private_dir
from server.jobs import Worker
from server.registry import Registry
from shared import signing

EXTENSION = "home_energy"  # the State's key in app.extensions


@dataclass
class State:
    config: ServerConfig
    db: Database
    keys: signing.KeyPair
    registry: Registry
    dummy_hash: str = ""  # checked when the user name is wrong, so that both cases take as long (server.auth)


def build_state(config: ServerConfig) -> State:
    """Open the database, signing key and registry (creating the private directories on a first start)."""
    private_dir(config.data_dir)
    db = Database(config.db_path)
    keys = signing.load_or_create_keypair(config.key_path)
    for d in (config.cache_dir, config.uploads_dir):
        private_dir(d)
    return State(config, db, keys, Registry(config.registry_dir, db, keys))


def current() -> State:
    """The State of the app handling this request."""
    return current_app.extensions[EXTENSION]


def start_worker_thread(st: State) -> Worker:
    """A job worker in a daemon thread of this process (development server and tests; gunicorn runs
    `python -m server worker` instead)."""
    worker = Worker(st)
    threading.Thread(target=worker.run_forever, name="job-worker", daemon=True).start()
    return worker
