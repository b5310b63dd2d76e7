"""What the pages, the API and the job worker share: the config, the database, the signing key and the registry.

Plain data without Flask or the worker, so that every module taking a State can name its type: the app keeps
its State in `app.extensions` (server.factory.current), the job worker gets it as an argument (server.jobs).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.config import ServerConfig
from server.db import Database
from server.files import private_dir
from server.registry import Registry
from shared import signing


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
