"""gunicorn settings for the server. Run: SERVER_CONFIG=server.toml gunicorn -c server/gunicorn.conf.py server.wsgi:app

Request handling runs in `workers` processes; the job worker runs once, in a process the master starts when it is
ready as `python -m server worker` (jobs are claimed atomically in SQLite, so even a second worker could not run a job twice).
Only the job worker imports and starts Ray (at its first training): the HTTP workers never load it.
"""

import os
import subprocess
import sys

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


def when_ready(server):
    """Start the one job worker (`python -m server worker`) beside the HTTP workers."""
    global _job_worker
    if os.environ.get("SERVER_JOB_WORKER", "1") == "1":
        _job_worker = subprocess.Popen([sys.executable, "-m", "server", "worker"])
        server.log.info("job worker started (pid %s)", _job_worker.pid)


def on_exit(server):
    """Stop the job worker: it cancels its running jobs and shuts Ray down (up to about 30 s), else it is killed."""
    if _job_worker is not None and _job_worker.poll() is None:
        _job_worker.terminate()
        try:
            _job_worker.wait(45)
        except subprocess.TimeoutExpired:
            _job_worker.kill()
            _job_worker.wait()
