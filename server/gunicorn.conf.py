"""gunicorn settings for the server. Run: SERVER_CONFIG=server.toml gunicorn -c server/gunicorn.conf.py server.wsgi:app

Request handling runs in `workers` processes; the job worker runs once, in a process the master starts when it is
ready (jobs are claimed atomically in SQLite, so even a second worker could not run a job twice).
"""

import multiprocessing
import os

bind = os.environ.get("SERVER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SERVER_WORKERS", "4"))
threads = int(os.environ.get("SERVER_THREADS", "4"))
worker_class = "gthread"
timeout = 60
graceful_timeout = 20
accesslog = os.environ.get("SERVER_ACCESS_LOG")  # None: off
errorlog = "-"
loglevel = os.environ.get("SERVER_LOG_LEVEL", "info")
preload_app = False

_job_worker = None


def _run_job_worker():
    import logging

    from server.app import State
    from server.config import load_config
    from server.db import Database
    from server.jobs import Worker
    from server.registry import Registry
    from shared.signing import load_or_create_keypair

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config()
    db = Database(cfg.db_path)
    keys = load_or_create_keypair(cfg.key_path)
    Worker(State(cfg, db, keys, Registry(cfg.data_dir / "registry", db, keys))).run_forever()


def when_ready(server):
    global _job_worker
    if os.environ.get("SERVER_JOB_WORKER", "1") == "1":
        _job_worker = multiprocessing.get_context("spawn").Process(target=_run_job_worker, name="job-worker",
                                                                    daemon=True)
        _job_worker.start()
        server.log.info("job worker started (pid %s)", _job_worker.pid)


def on_exit(server):
    if _job_worker is not None and _job_worker.is_alive():
        _job_worker.terminate()
        _job_worker.join(10)
