"""Edge agent for the Raspberry Pi: MQTT -> InfluxDB ingest, energy flow, int8 TFLite forecasts, model lifecycle."""

__version__ = "0.1.0"
