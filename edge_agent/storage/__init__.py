"""The edge's own reads of InfluxDB beyond shared.storage, shared by the flow and the forecast: counter values at
slot boundaries, read two readings per boundary and cached."""
