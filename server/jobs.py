"""Background jobs (pull history, train) run by the job worker, never inside a request.

Jobs are rows in SQLite: the record of what ran, where (machine and Ray node), for how long, with what result.
The worker claims queued jobs with one atomic UPDATE each, so however many workers run, a job runs once; a partial
unique index allows one queued/running job per node. Each claimed job runs in a thread of the worker:
- a **pull** reads the node's InfluxDB into data_dir/cache here (network I/O on the LAN, no CPU; at most
  `[jobs] pull_concurrency` at once);
- a **train** (after its own pull with `pull_days`) hands the house's history to a Ray task
  (training.task.train_house via server.cluster) and gets the four bundles (and the weather bundles its rule
  ships, given the house's outdoor temperature: server.temperature) back; the task's progress events drive
  the row's bar, cancel stops the task, and the bundles are signed and registered for the job's owner here.
  As many trainings run as the cluster holds (its CPUs / `cpus_per_job`, or `max_concurrent`); operator jobs go
  before scheduled ones, otherwise the oldest first, and a house has at most one job in the queue: a nightly
  retrain of every house runs longest-untrained first and no house starves.
Progress (percent, stage), log, result and a cancel flag live in the row, so the page survives reloads. The worker
also polls the nodes' status and, now and then, their live skill (server.skill), in a small thread pool.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server import datafiles, nodes, retention, temperature
from server.cluster import Cluster
from server.db import Database
from server.notify import Notifier
from server.pull import history_bytes, node_skill, pull_history
from server.registry import group_owner, node_owner
from server.state import State
from server.temperature import TemperatureInput
from shared import manifest as mf
from shared.series import parse_time_ns, read_csv

log = logging.getLogger(__name__)
PULL_SPAN = (0.0, 10.0)  # a training job that pulls first (`pull_days`): the pull's share of its progress bar
TRAIN_SPAN = (12.0, 92.0)  # the training task's share
SCHEDULE_EVERY_S = 60.0
CANCEL_GRACE_S = 30.0  # a cancelled task that has not stopped by then is given up (and logged)


def redact(line: str, max_len: int = 300) -> str:
    """A training error line for the job log without quoted or bracketed text (which could echo file content)."""
    return re.sub(r"\[[^\]]*\]?|'[^']*'?|\"[^\"]*\"?", "…", line)[:max_len]


class JobRefused(Exception):
    pass


class Cancelled(Exception):
    pass


def training_calendar(params: dict, node: dict | None) -> tuple[dict | None, str]:
    """The public holidays a training uses — the job's own (`holidays`, "" for none), else what the node's agent
    says in its status (`calendar`: its [forecast] holidays and timezone) — and where that came from."""
    if "holidays" in params:
        if not params["holidays"]:
            return None, "the job"
        return {"holidays": params["holidays"], "timezone": params.get("timezone") or "UTC"}, "the job"
    status = nodes.public(node)["status"] if node else None
    cal = (status or {}).get("calendar") or {}
    if cal.get("holidays"):
        return {"holidays": cal["holidays"], "timezone": cal.get("timezone") or "UTC"}, "the agent's config"
    return None, ""


def enqueue(db: Database, node_id: int | None, kind: str, params: dict, scheduled: bool = False) -> int:
    try:
        return db.add_job(node_id, kind, params, scheduled)
    except sqlite3.IntegrityError:
        raise JobRefused("this node already has a queued or running job; wait for it or cancel it") from None


def public(job: dict) -> dict:
    out = dict(job)
    for k in ("params", "result"):
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k])
    return out


def _span(span: tuple[float, float], fraction: float) -> float:
    return span[0] + (span[1] - span[0]) * fraction


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Worker:
    def __init__(self, app_state: State, cluster: Cluster | None = None):
        self.s = app_state
        cfg = app_state.config.jobs
        self.cluster = cluster or Cluster(cfg, app_state.config.data_dir)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._stop = threading.Event()
        self._last = {"schedule": 0.0, "poll": 0.0, "skill": 0.0}
        self._threads: dict[int, tuple[str, threading.Thread]] = {}
        self._monitor = ThreadPoolExecutor(cfg.poll_concurrency, thread_name_prefix="node-poll")
        self._monitoring: list = []
        self.notifier = Notifier(app_state.config.notify, app_state.db)
        self._notify_due = False

    # -- loop -----------------------------------------------------------------------------------------
    def run_forever(self, poll_s: float = 0.5) -> None:
        log.info("job worker %s started", self.name)
        self.recover()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("worker tick failed")
            self._stop.wait(poll_s)
        self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        """Running jobs are cancelled (their tasks stopped), then Ray and the poll threads go."""
        for jid in list(self._threads):
            self.s.db.job_update(jid, cancel=1)
        deadline = time.monotonic() + CANCEL_GRACE_S
        for _, t in list(self._threads.values()):
            t.join(max(0.1, deadline - time.monotonic()))
        self._monitor.shutdown(wait=False, cancel_futures=True)
        self.cluster.shutdown()
        log.info("job worker %s stopped", self.name)

    def recover(self) -> None:
        """Jobs left running by a worker of this machine that is gone (killed, restarted) are marked failed, so
        their nodes can get new jobs (one queued or running job per node)."""
        host = socket.gethostname()
        for job in self.s.db.running_jobs():
            w_host, _, rest = (job["worker"] or "").partition(":")
            pid = rest.partition(":")[0]
            if w_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                self.s.db.job_update(job["id"], state="failed", stage="failed", finished=time.time(),
                                     error="the job worker stopped while this job ran")

    def tick(self) -> None:
        now = time.time()
        cfg = self.s.config
        if now - self._last["schedule"] > SCHEDULE_EVERY_S:
            self._last["schedule"] = now
            self.schedule_retrains()
        self._monitoring = [f for f in self._monitoring if not f.done()]
        if not self._monitoring and self._notify_due:  # every house polled: tell who needs to know
            self._notify_due = False
            try:
                self.notifier.run(now)
            except Exception:
                log.exception("notifications failed")
        if not self._monitoring and now - self._last["poll"] > cfg.status_poll_s:
            self._last["poll"] = now
            self._monitoring = [self._monitor.submit(nodes.poll, self.s.db, n) for n in self.s.db.nodes()]
            self._notify_due = True
        if cfg.jobs.skill_poll_s and not self._monitoring and now - self._last["skill"] > cfg.jobs.skill_poll_s:
            self._last["skill"] = now
            self._monitoring = [self._monitor.submit(self.refresh_skill, n) for n in self.s.db.nodes()]
        self.dispatch()

    def dispatch(self) -> None:
        """Claim queued jobs while there is room (trainings: the cluster's capacity; pulls: pull_concurrency) and
        run each in its own thread."""
        for jid in [j for j, (_, t) in self._threads.items() if not t.is_alive()]:
            del self._threads[jid]
        while not self._stop.is_set():
            running = [kind for kind, _ in self._threads.values()]
            kinds = tuple(k for k, room in (("train", self.cluster.capacity()),
                                            ("pull", self.s.config.jobs.pull_concurrency)) if running.count(k) < room)
            job = self.s.db.claim_job(self.name, kinds) if kinds else None
            if job is None:
                return
            t = threading.Thread(target=self.run_job, args=(job,), name=f"job-{job['id']}", daemon=True)
            self._threads[job["id"]] = (job["kind"], t)
            t.start()

    def schedule_retrains(self) -> None:
        """Nodes with retrain_days > 0 get a training job (pull 60 days, train, push if better) when their last one
        is that old; queued longest-untrained first."""
        for node in self.s.db.nodes_to_retrain():
            if node["last_train"] is None or time.time() - node["last_train"] > node["retrain_days"] * 86400:
                try:
                    enqueue(self.s.db, node["id"], "train", {"pull_days": 60, "auto_push": True, "scheduled": True},
                            scheduled=True)
                    log.info("scheduled retrain queued for %s", node["name"])
                except JobRefused:
                    pass

    def refresh_skill(self, node: dict, now: datetime | None = None) -> None:
        """The node's live skill, if it answers and has an InfluxDB connection (errors are only logged)."""
        status = json.loads(node["status"]) if node.get("status") else {}
        if not status.get("reachable") or not json.loads(node["influx"] or "{}").get("url"):
            return
        try:
            self.s.db.set_node_skill(node["id"], node_skill(node, status, now or datetime.now(UTC)))
        except Exception as exc:
            log.info("live skill of %s: %s", node["name"], exc)

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
        if self.s.db.cancel_requested(jid) or self._stop.is_set():
            raise Cancelled()

    # -- pull -----------------------------------------------------------------------------------------
    def pull(self, jid: int, node_id: int, params: dict, span: tuple[float, float] = (0.0, 100.0)) -> dict:
        """History from the node's InfluxDB into a local CSV (server.pull), its progress on `span` of the bar."""
        self.s.db.job_update(jid, host=socket.gethostname())
        result = pull_history(self.s.config, self.s.db.node(node_id), params,
                              lambda done, stage: self._progress(jid, _span(span, done), stage))
        self.s.db.job_log(jid, f"{result['rows']} readings of {result.pop('series')} → {Path(result['file']).name}")
        temp = result.get("temperature")
        if temp and temp.get("file"):
            self.s.db.job_log(jid, f"outdoor temperature: {temp['slots']} slots ({temp['measured']} measured, the "
                                   f"rest forecast) from {temp['first']} to {temp['last']} → {Path(temp['file']).name}")
        else:
            self.s.db.job_log(jid, "outdoor temperature: " + (temp["error"] if temp else "none recorded (weather_slots)"))
        try:
            gone = retention.prune_pulls(self.s.db, self.s.config.cache_dir, node_id, self.s.config.keep_pulls)
            if gone["files"]:
                self.s.db.job_log(jid, f"retention: deleted {gone['files']} older pulls ({gone['bytes'] >> 10} KB; "
                                       f"keep_pulls = {self.s.config.keep_pulls})")
        except OSError as exc:
            log.warning("retention: pulls of node %d: %s", node_id, exc)
        return result

    # -- train ----------------------------------------------------------------------------------------
    def _data_files(self, jid: int, node_id: int | None, params: dict) -> tuple[list[str], dict | None]:
        """The job's CSV files, each checked again to lie in the server's data areas (server.datafiles): the given
        ones, else with `pull_days` the node's last that many days pulled now, else the node's latest pull — and
        that pull's result (None for given files), which names its outdoor temperature file if any."""
        if params.get("data"):
            pulled, files = None, [str(datafiles.resolve(self.s.config, str(p))) for p in params["data"]]
        else:
            if params.get("pull_days") and node_id:
                end = datetime.now(UTC).replace(second=0, microsecond=0)
                start = end - timedelta(days=int(params["pull_days"]))
                pulled = self.pull(jid, node_id, {"start": start.isoformat(), "end": end.isoformat()}, PULL_SPAN)
                params["pulled"] = pulled  # the job's result names it: the gate's "latest pull" (Database.last_pull)
            else:
                pulled = self.s.db.last_pull(node_id) if node_id else None
                if not pulled:
                    raise ValueError("no data: pull history from the node first (or give data files)")
            pulled = datafiles.checked_pull(self.s.config, pulled)  # its energy and temperature files, checked once
            files = [pulled["file"]]
        for f in files:
            _check_readable(f)
        return files, pulled

    def _temperature(self, jid: int, pulled: dict | None, series, params: dict,
                     node: dict | None) -> TemperatureInput | None:
        """The outdoor temperature a node's training gets (server.temperature), logged either way; None for a
        training on given files."""
        if node is None or pulled is None:
            return None
        cut = series.until(parse_time_ns(params["until"]) - 1) if params.get("until") else series
        chosen = temperature.choose(pulled, cut, params, nodes.public(node)["status"])
        calendar, _ = training_calendar(params, node)
        if chosen.file and calendar and calendar["timezone"] != chosen.timezone:  # the CLI has one --timezone
            chosen.file, chosen.note = None, (f"without outdoor temperature: the holidays' timezone "
                                              f"{calendar['timezone']} differs from the house's {chosen.timezone}")
        self.s.db.job_log(jid, chosen.note)
        return chosen

    def train(self, jid: int, node_id: int | None, params: dict) -> dict:
        """Train as a Ray task on the house's history, register the bundles for the job's owner, push if asked."""
        files, pulled = self._data_files(jid, node_id, params)
        node = self.s.db.node(node_id) if node_id else None
        owner = node_owner(node_id) if node_id else group_owner(params.get("group") or "default")
        from training.data import load

        series = load(files)
        temp = self._temperature(jid, pulled, series, params, node)
        self._progress(jid, PULL_SPAN[1] + 1, "waiting for the cluster" if not self.cluster.started else "submitted")
        done = self._run_task(jid, files, params, node, temp)
        self._progress(jid, TRAIN_SPAN[1] + 1, "registering")
        with tempfile.TemporaryDirectory(prefix="bundles-") as out:
            dirs = []
            for name in done["bundles"]:
                d = Path(out) / name
                d.mkdir()
                (d / mf.MANIFEST_FILE).write_bytes(done["bundles"][name]["manifest"])
                (d / mf.MODEL_FILE).write_bytes(done["bundles"][name]["model"])
                dirs.append(d)
            versions = self.s.registry.add_run(dirs, owner, series, jid, node["name"] if node else None)
        result = {"versions": {v["name"]: v["version"] for v in versions}, "owner": owner,
                  "ran_on": {k: done.get(k) for k in ("host", "ray_node", "peak_mb", "seconds")}}
        if params.get("pulled"):
            result["pulled"] = params["pulled"]
        if temp is not None:
            result["temperature"] = temp.doc()
        if params.get("auto_push") and node_id:
            self._progress(jid, 96, "gate and push")
            pulled_temp = ((pulled or {}).get("temperature") or {}).get("file")
            gate_temp = temperature.as_forecasts(pulled_temp, temp.timezone if temp else "UTC")
            result["pushes"] = self.auto_push(node_id, versions, series, gate_temp)
        try:
            gone = retention.prune_runs(self.s.db, self.s.config.registry_dir, owner, self.s.config.keep_runs)
            if gone["runs"]:
                self.s.db.job_log(jid, f"retention: deleted {gone['runs']} older runs of {owner} "
                                       f"({', '.join(gone['versions'])}; {gone['bytes'] >> 10} KB of models; "
                                       f"keep_runs = {self.s.config.keep_runs})")
        except OSError as exc:
            log.warning("retention: runs of %s: %s", owner, exc)
        return result

    def _run_task(self, jid: int, files: list[str], params: dict, node: dict | None,
                  temp: TemperatureInput | None = None) -> dict:
        """The Ray task: its events drive the bar and the log; a cancel stops it. Returns its last event."""
        kw = {"node": node["name"] if node else None, "until": params.get("until"),
              "quick": bool(params.get("quick")), "epochs": int(params.get("epochs") or self.s.config.training_epochs)}
        calendar, source = training_calendar(params, node)
        if calendar:
            kw |= calendar
        if temp is not None and temp.file is not None:
            kw |= {"temperature": history_bytes([temp.file])[0], "timezone": temp.timezone,
                   "keep_weather": bool(params.get("keep_weather"))}
        self.s.db.job_log(jid, f"training {', '.join(Path(f).name for f in files)} as a Ray task "
                               f"({self.s.config.jobs.cpus_per_job:g} CPU){' quick' if kw['quick'] else ''}"
                               + (f", public holidays {calendar['holidays']} ({calendar['timezone']}, {source})"
                                  if calendar else ""))
        self._progress(jid, TRAIN_SPAN[0], "training")
        gen = self.cluster.submit(history_bytes(files), **kw)
        cancelled_at = None
        try:
            for event in self.cluster.events(gen):
                if cancelled_at is None and (self.s.db.cancel_requested(jid) or self._stop.is_set()):
                    cancelled_at = time.monotonic()
                    self.cluster.cancel(gen)
                if cancelled_at is not None:
                    if time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                        log.warning("job %d: the cancelled task has not stopped after %.0f s", jid, CANCEL_GRACE_S)
                        break
                    continue
                if event is None:
                    continue
                if "bundles" in event:
                    self.s.db.job_update(jid, host=event.get("host"), ray_node=event.get("ray_node"),
                                         peak_mb=event.get("peak_mb"))
                    self.s.db.job_log(jid, f"trained on {event.get('host')} (Ray node "
                                           f"{(event.get('ray_node') or '?')[:12]}) in {event.get('seconds')} s, "
                                           f"peak {event.get('peak_mb')} MB")
                    return event
                self._task_event(jid, event)
        except Exception as exc:
            if cancelled_at is not None:
                raise Cancelled() from None
            raise RuntimeError(f"training task failed: {_task_error(exc)}") from None
        if cancelled_at is not None:
            raise Cancelled()
        raise RuntimeError("the training task ended without bundles")

    def _task_event(self, jid: int, event: dict) -> None:
        if "progress" in event:
            self.s.db.job_update(jid, percent=round(_span(TRAIN_SPAN, event["progress"] / 100), 1),
                                 stage=str(event.get("stage", ""))[:120])
        elif "line" in event:
            line = str(event["line"])
            self.s.db.job_log(jid, redact(line) if line.startswith("error") else line[:500])

    def auto_push(self, node_id: int, versions: list[dict], series, temperature=None) -> list[dict]:
        """Each new version through the gate (on `series`, weather bundles given `temperature`), pushed or held."""
        node = self.s.db.node(node_id)
        status = nodes.poll(self.s.db, node)
        if not status.get("reachable"):
            return [{"ok": False, "message": f"node unreachable: {status.get('error')}"}]
        results = []
        for v in versions:
            row, why = nodes.choose_push(self.s.registry, status, v, series, temperature)
            if row is not None:
                results.append(nodes.push(self.s.db, node, row, why=why) | {"gate": why})
            else:
                results.append(nodes.held(self.s.db, node, v, why))
        nodes.poll(self.s.db, node)
        return results


def _task_error(exc: Exception) -> str:
    """A failed task's error for the job row: its last line (Ray prints the remote traceback above it), redacted."""
    text = str(exc).strip().splitlines()
    return redact(text[-1] if text else type(exc).__name__)


def _check_readable(file: str) -> None:
    """Read the file here, so that a bad one fails with its name only, never with its content (the training
    process's own error could quote it)."""
    try:
        ok = len(read_csv(file).times) > 0
    except (ValueError, OSError, UnicodeError):
        ok = False
    if not ok:
        raise ValueError(f"data file {file} is not a readable time,value CSV with readings")


def start_worker_thread(st: State) -> Worker:
    """A job worker in a daemon thread of this process (development server and tests; gunicorn runs
    `python -m server worker` instead)."""
    worker = Worker(st)
    threading.Thread(target=worker.run_forever, name="job-worker", daemon=True).start()
    return worker
