"""Storage behind one small interface: InfluxDB 1.x (HTTP line protocol + InfluxQL) or 2.x (influxdb-client + Flux)."""

from __future__ import annotations

from shared.storage.base import Storage, StorageConfig, StorageError


def open_storage(config: StorageConfig) -> Storage:
    """A Storage for the configured flavour (`version` 1 or 2)."""
    if config.version == 1:
        from shared.storage.influx1 import Influx1Storage

        return Influx1Storage(config)
    if config.version == 2:
        from shared.storage.influx2 import Influx2Storage

        return Influx2Storage(config)
    raise ValueError(f"storage.version must be 1 or 2, not {config.version!r}")


__all__ = ["Storage", "StorageConfig", "StorageError", "open_storage"]
