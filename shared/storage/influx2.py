"""InfluxDB 2.x through influxdb-client: synchronous writes (errors raise, nothing is silently dropped), Flux."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.points import Point, to_lines
from shared.schema import KEPT_MEASUREMENTS
from shared.storage.base import StorageConfig, StorageError

log = logging.getLogger(__name__)


def _flux_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Influx2Storage:
    def __init__(self, config: StorageConfig):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        if not (config.token and config.org and (config.bucket or config.database)):
            raise ValueError("storage version 2 needs url, org, bucket and a token")
        self.config = config
        self.bucket = config.bucket or config.database
        self._client = InfluxDBClient(url=config.url, token=config.token, org=config.org,
                                      timeout=int(config.timeout_s * 1000))
        # The default batching write_api swallows errors (FACTS.md): write synchronously instead.
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._query = self._client.query_api()

    def bucket_of(self, measurement: str) -> str:
        """What lasts goes to the keep bucket (`keep_policy` names it in 2.x; its retention is the bucket's own),
        the rest to `bucket`. Untested: no InfluxDB 2.x server can run on the development machine."""
        if self.config.keep_policy and measurement in KEPT_MEASUREMENTS:
            return self.config.keep_policy
        return self.bucket

    def source(self, measurement: str) -> str:
        return '"' + measurement.replace('"', '\\"') + '"'  # InfluxQL is 1.x only; Flux names the bucket instead

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        kept = [p for p in points if self.bucket_of(p.measurement) != self.bucket]
        rest = [p for p in points if self.bucket_of(p.measurement) == self.bucket]
        if rest:
            self.write_lines(to_lines(rest))
        if kept:
            self.write_lines(to_lines(kept), self.config.keep_policy)

    def write_lines(self, body: bytes, bucket: str | None = None) -> None:
        from influxdb_client.rest import ApiException

        try:
            self._write.write(bucket=bucket or self.bucket, org=self.config.org, record=body.decode("utf-8"),
                              write_precision="ns")
        except ApiException as exc:
            status = int(exc.status or 0)
            raise StorageError(f"write failed ({status}): {exc.body or exc.reason}",
                               retryable=status >= 500 or status in (401, 403, 404, 429), status=status) from None
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise StorageError(f"InfluxDB at {self.config.url} unreachable: {exc}") from None

    def query(self, text: str) -> list[dict]:
        try:
            tables = self._query.query(text, org=self.config.org)
        except Exception as exc:
            raise StorageError(f"query failed: {exc}", retryable=False) from None
        rows = []
        for table in tables:
            for record in table.records:
                row = dict(record.values)
                t = record.get_time()
                if t is not None:
                    row["time"] = int(t.timestamp() * 1e9)
                rows.append(row)
        return rows

    def query_series(self, measurement: str, field: str, start: datetime, end: datetime,
                     tags: dict[str, str] | None = None) -> list[tuple[int, float]]:
        filters = [f"r._measurement == {_flux_str(measurement)}", f"r._field == {_flux_str(field)}"]
        filters += [f"r[{_flux_str(k)}] == {_flux_str(v)}" for k, v in (tags or {}).items()]
        flux = (f"from(bucket: {_flux_str(self.bucket_of(measurement))})"
                f" |> range(start: {start.astimezone(UTC).isoformat()}, stop: {end.astimezone(UTC).isoformat()})"
                f" |> filter(fn: (r) => {' and '.join(filters)})"
                f" |> group() |> sort(columns: [\"_time\"])")
        out = []
        for row in self.query(flux):
            value = row.get("_value")
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append((row["time"], float(value)))
        return out

    def readings_near(self, measurement: str, field: str, tags: dict[str, str] | None, boundaries_ns: list[int],
                      window_ns: int) -> list[tuple[int, float]]:
        """The raw readings around the boundaries, then the two neighbours of each boundary picked here (one Flux
        query; untested: no InfluxDB 2.x server can run on the development machine)."""
        if not boundaries_ns:
            return []
        lo, hi = min(boundaries_ns) - window_ns, max(boundaries_ns) + window_ns
        rows = self.query_series(measurement, field, datetime.fromtimestamp(lo / 1e9, UTC),
                                 datetime.fromtimestamp(hi / 1e9, UTC), tags)
        times = [t for t, _ in rows]
        out: set[tuple[int, float]] = set()
        import bisect

        for b in boundaries_ns:
            i = bisect.bisect_right(times, b)
            if i > 0 and times[i - 1] > b - window_ns:
                out.add(rows[i - 1])
            if i < len(rows) and times[i] <= b + window_ns:
                out.add(rows[i])
        return sorted(out)

    def delete_points(self, measurement: str, times_ns: list[int]) -> None:
        """The delete API with a time range per point (untested: no InfluxDB 2.x server here)."""
        api = self._client.delete_api()
        for t in times_ns:
            start = datetime.fromtimestamp(t / 1e9, UTC)
            api.delete(start, start, f'_measurement="{measurement}"', bucket=self.bucket, org=self.config.org)

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:
            return False

    def close(self) -> None:
        self._client.close()
