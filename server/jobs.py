"""Background jobs (pull history, train) run by a worker, never inside a request.

Design: jobs are rows in SQLite. A worker claims the oldest queued job with one atomic UPDATE, so however many
workers run (one per gunicorn master via the `when_ready` hook, or a thread in development), a job runs once.
A partial unique index allows one queued/running job per node. Progress (percent, stage), log, result and a
cancel flag live in the row, so the page survives reloads. Training runs `python -m training train` as a
subprocess (its `progress:` lines update the row; cancel kills it).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server import datafiles, nodes
from server.db import Database
from server.files import open_private, private_dir
from shared.schema import BUNDLE_NAMES
from shared.series import read_csv

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERIES = ("EnergyMeter", "EnergyIn")  # measurement and field pulled when neither node nor job names one
PULL_SPAN = (0.0, 10.0)  # a training job that pulls first (`pull_days`): the pull's share of its progress bar


def redact(line: str, max_len: int = 300) -> str:
    """A training error line for the job log without quoted or bracketed text (which could echo file content)."""
    return re.sub(r"\[[^\]]*\]?|'[^']*'?|\"[^\"]*\"?", "…", line)[:max_len]


def _influx_rows(st, url: str, measurement: str, field: str, start, end, tags):
    """query_series, with errors that say what went wrong but show nothing of the answer (the URL may point at
    another service than InfluxDB)."""
    from shared.storage import StorageError

    try:
        return st.query_series(measurement, field, start, end, tags)
    except StorageError as exc:
        if exc.status in (401, 403):
            raise ValueError(f"InfluxDB at {url} refused the credentials (HTTP {exc.status})") from None
        if exc.status == 404:
            raise ValueError(f"InfluxDB at {url}: database not found (HTTP 404)") from None
        if exc.status:
            raise ValueError(f"InfluxDB at {url}: query failed (HTTP {exc.status})") from None
        reason = re.search(r"\[Errno \d+\][\w ]+|timed out", str(exc))
        if "unreachable" in str(exc):
            raise ValueError(f"InfluxDB at {url} unreachable" + (f": {reason.group(0)}" if reason else "")) from None
        raise ValueError(f"InfluxDB at {url} refused the query (check measurement, field and tags)") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        raise ValueError(f"InfluxDB at {url}: the answer is not an InfluxDB query result") from None


class JobRefused(Exception):
    pass


class Cancelled(Exception):
    pass


def enqueue(db: Database, node_id: int | None, kind: str, params: dict) -> int:
    try:
        return db.add_job(node_id, kind, params)
    except sqlite3.IntegrityError:
        raise JobRefused("this node already has a queued or running job; wait for it or cancel it") from None


def public(job: dict) -> dict:
    out = dict(job)
    for k in ("params", "result"):
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k])
    return out


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _storage_config(influx: dict):
    """The node's InfluxDB connection as a StorageConfig (what to read is the pull's, not the storage's)."""
    from shared.storage import StorageConfig

    return StorageConfig(**{k: v for k, v in influx.items() if k in StorageConfig.__dataclass_fields__
                            and k not in ("measurement", "field", "tags")})


class Worker:
    def __init__(self, app_state):
        self.s = app_state  # server.state.State: config, db, registry, keys
        self.name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._stop = threading.Event()
        self._last_schedule = 0.0
        self._last_poll = 0.0

    # -- loop -----------------------------------------------------------------------------------------
    def run_forever(self, poll_s: float = 0.5) -> None:
        log.info("job worker %s started", self.name)
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("worker tick failed")
            self._stop.wait(poll_s)

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> None:
        now = time.time()
        if now - self._last_schedule > 60:
            self._last_schedule = now
            self.schedule_retrains()
        if now - self._last_poll > self.s.config.status_poll_s:
            self._last_poll = now
            for node in self.s.db.nodes():
                nodes.poll(self.s.db, node)
        job = self.s.db.claim_job(self.name)
        if job:
            self.run_job(job)

    def schedule_retrains(self) -> None:
        """Nodes with retrain_days > 0 get a training job when their last one is that old."""
        for node in self.s.db.nodes_to_retrain():
            if node["last_train"] is None or time.time() - node["last_train"] > node["retrain_days"] * 86400:
                try:
                    enqueue(self.s.db, node["id"], "train", {"pull_days": 60, "auto_push": True, "scheduled": True})
                    log.info("scheduled retrain queued for %s", node["name"])
                except JobRefused:
                    pass

    def run_job(self, job: dict) -> None:
        db, jid = self.s.db, job["id"]
        log.info("job %d (%s) started", jid, job["kind"])
        try:
            result = self._run(job)
            db.job_update(jid, state="done", percent=100, stage="done", result=result, finished=time.time())
        except Cancelled:
            db.job_update(jid, state="cancelled", stage="cancelled", finished=time.time())
        except Exception as exc:
            log.exception("job %d failed", jid)
            db.job_log(jid, f"error: {exc}")
            db.job_update(jid, state="failed", stage="failed", error=str(exc), finished=time.time())

    def _run(self, job: dict) -> dict:
        params = json.loads(job["params"])
        if job["kind"] == "pull":
            return self.pull(job["id"], job["node_id"], params)
        if job["kind"] == "train":
            return self.train(job["id"], job["node_id"], params)
        raise ValueError(f"unknown job kind {job['kind']!r}")

    def _progress(self, jid: int, percent: float, stage: str) -> None:
        self.s.db.job_update(jid, percent=round(percent, 1), stage=stage)
        if self.s.db.cancel_requested(jid):
            raise Cancelled()

    # -- pull ----------------------------------------------------------------------------------------------
    def pull(self, jid: int, node_id: int, params: dict, span: tuple[float, float] = (0, 100)) -> dict:
        """History from the node's InfluxDB into a local CSV (time,value), week by week with progress (mapped onto
        `span` of the job's bar)."""
        node = self.s.db.node(node_id)
        influx = json.loads(node["influx"] or "{}")
        if not influx.get("url"):
            raise ValueError(f"node {node['name']} has no InfluxDB connection configured")
        start, end = _time(params["start"]), _time(params["end"])
        series = (params.get("measurement") or influx.get("measurement", DEFAULT_SERIES[0]),
                  params.get("field") or influx.get("field", DEFAULT_SERIES[1]),
                  params.get("tags") or influx.get("tags") or None)
        folder = private_dir(private_dir(self.s.config.cache_dir) / f"node-{node_id}")
        out = folder / f"{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.csv"
        rows = self._pull_to_csv(jid, influx, series, start, end, out, span)
        measurement, field = series[:2]
        self.s.db.job_log(jid, f"{rows} readings of {measurement}.{field} → {out.name}")
        if rows == 0:
            raise ValueError(f"no {measurement}.{field} readings between {params['start']} and {params['end']}")
        return {"file": str(out), "rows": rows}

    def _pull_to_csv(self, jid: int, influx: dict, series: tuple, start: datetime, end: datetime, out: Path,
                     span: tuple[float, float]) -> int:
        """Write the readings to `out` (0600), appearing only when complete; the number of rows."""
        from shared.storage import open_storage

        st = open_storage(_storage_config(influx))
        tmp = out.with_suffix(".part")
        try:
            with open_private(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["time", "value"])
                rows = self._pull_weeks(jid, st, influx["url"], series, start, end, w, span)
            os.replace(tmp, out)
        finally:
            st.close()
            tmp.unlink(missing_ok=True)
        return rows

    def _pull_weeks(self, jid: int, st, url: str, series: tuple, start: datetime, end: datetime, w,
                    span: tuple[float, float]) -> int:
        rows, t, total = 0, start, (end - start).total_seconds()
        while t < end:
            t2 = min(end, t + timedelta(days=7))
            for ns, v in _influx_rows(st, url, *series[:2], t, t2, series[2]):
                w.writerow([datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z"), v])
                rows += 1
            t = t2
            done = (t - start).total_seconds() / total
            self._progress(jid, span[0] + (span[1] - span[0]) * done, f"pulled to {t:%Y-%m-%d}")
        return rows

    # -- train ----------------------------------------------------------------------------------------
    def _data_files(self, jid: int, node_id: int | None, params: dict) -> list[str]:
        """The job's CSV files, each checked again to lie in the server's data areas (server.datafiles): the given
        ones, else with `pull_days` the node's last that many days pulled now, else the node's latest pull."""
        if params.get("data"):
            given = [str(p) for p in params["data"]]
        elif params.get("pull_days") and node_id:
            end = datetime.now(UTC).replace(second=0, microsecond=0)
            start = end - timedelta(days=int(params["pull_days"]))
            pulled = self.pull(jid, node_id, {"start": start.isoformat(), "end": end.isoformat()}, PULL_SPAN)
            params["pulled"] = pulled  # the job's result names it: the gate's "latest pull" (Database.last_pull)
            given = [pulled["file"]]
        else:
            last = self.s.db.last_pull(node_id) if node_id else None
            if not last:
                raise ValueError("no data: pull history from the node first (or give data files)")
            given = [last["file"]]
        files = [str(datafiles.resolve(self.s.config, f)) for f in given]
        for f in files:
            _check_readable(f)
        return files

    def train(self, jid: int, node_id: int | None, params: dict) -> dict:
        files = self._data_files(jid, node_id, params)
        self._progress(jid, 1, "training")
        with tempfile.TemporaryDirectory(prefix="train-") as out:
            self._run_training(jid, self._training_command(files, params, out))
            self._progress(jid, 93, "registering")
            from training.data import load

            series = load(files)
            versions = [self.s.registry.add(Path(out) / n, series, jid) for n in BUNDLE_NAMES]
        result = {"versions": {v["name"]: v["version"] for v in versions}}
        if params.get("pulled"):
            result["pulled"] = params["pulled"]
        if params.get("auto_push") and node_id:
            self._progress(jid, 96, "gate and push")
            result["pushes"] = self.auto_push(node_id, versions, series)
        return result

    def _training_command(self, files: list[str], params: dict, out: str) -> list[str]:
        cmd = [self.s.config.python, "-m", "training", "train", "--out", out]
        for f in files:
            cmd += ["--data", f]
        if params.get("until"):
            cmd += ["--until", params["until"]]
        if params.get("quick"):
            cmd.append("--quick")
        return cmd + ["--epochs", str(int(params.get("epochs") or self.s.config.training_epochs))]

    def _run_training(self, jid: int, cmd: list[str]) -> None:
        """The training subprocess: its `progress:` lines drive the bar, `[bundle]` lines and (redacted) error
        lines go to the job log; a cancel kills its process group."""
        self.s.db.job_log(jid, "$ " + " ".join(cmd))
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True)
        try:
            for line in proc.stdout:
                self._training_line(jid, line.rstrip())
        except Cancelled:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if proc.wait() != 0:
            raise RuntimeError(f"training failed (exit {proc.returncode}); see the job log")

    def _training_line(self, jid: int, line: str) -> None:
        if line.startswith("progress: "):
            pct, _, stage = line[len("progress: "):].partition(" ")
            self._progress(jid, 2 + 0.9 * float(pct), stage)
        elif line.startswith("["):
            self.s.db.job_log(jid, line)
        elif line.startswith("error"):
            self.s.db.job_log(jid, redact(line))

    def auto_push(self, node_id: int, versions: list[dict], series) -> list[dict]:
        node = self.s.db.node(node_id)
        status = nodes.poll(self.s.db, node)
        if not status.get("reachable"):
            return [{"ok": False, "message": f"node unreachable: {status.get('error')}"}]
        results = []
        for v in versions:
            ok, why = nodes.gate(self.s.registry, status, v, series)
            if ok:
                results.append(nodes.push(self.s.db, self.s.registry, node, v["name"], v["version"]) | {"gate": why})
            else:
                results.append({"ok": False, "name": v["name"], "version": v["version"], "gate": why})
        nodes.poll(self.s.db, node)
        return results


def _check_readable(file: str) -> None:
    """Read the file here, so that a bad one fails with its name only, never with its content (the training
    subprocess's own error could quote it)."""
    try:
        ok = len(read_csv(file).times) > 0
    except (ValueError, OSError, UnicodeError):
        ok = False
    if not ok:
        raise ValueError(f"data file {file} is not a readable time,value CSV with readings")
