"""Ingest: MQTT → spool (fsynced, acknowledged after) → InfluxDB, never losing a message and never stopped by one.

pipeline.Ingest runs it; convert, rules and formats turn messages into line protocol (or dead-letter entries);
spool, deadletter, queue and drain are the durable and bounded parts; the buffered paho client it reads with is
edge_agent/runtime/mqtt_client.py (publish, away, weather and tariff connect with it too).
"""

from edge_agent.ingest.pipeline import Ingest

__all__ = ["Ingest"]
