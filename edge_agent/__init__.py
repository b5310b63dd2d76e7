"""Edge agent for the Raspberry Pi: MQTT -> InfluxDB ingest, energy flow, int8 TFLite forecasts, model lifecycle."""

from importlib.metadata import PackageNotFoundError, version

try:  # one version, pyproject.toml's: the installed package's
    __version__ = version("home-energy")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.2.0+source"
