"""Ingest: MQTT → spool (fsynced, acknowledged after) → InfluxDB, never losing a message and never stopped by one.

pipeline.Ingest runs it; convert, rules and formats turn messages into line protocol (or dead-letter entries);
spool, deadletter, queue and drain are the durable and bounded parts; mqtt is the buffered paho client.
"""

from edge_agent.ingest.mqtt import make_client
from edge_agent.ingest.pipeline import Ingest

__all__ = ["Ingest", "make_client"]
