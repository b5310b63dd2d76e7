"""`python -m server run|worker|hash-password|backup|restore`."""

import argparse
import getpass
import logging
import sys

from shared.extras import require


def main() -> int:
    ap = argparse.ArgumentParser(prog="home-energy-server")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="development server with an in-process job worker (production: gunicorn)")
    r.add_argument("--config")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8000)
    w = sub.add_parser("worker", help="run the job worker alone")
    w.add_argument("--config")
    h = sub.add_parser("hash-password", help="print a password hash for admin_password_hash")
    h.add_argument("--password", help="(default: prompt)")
    from server import backup

    backup.add_subcommands(sub)
    args = ap.parse_args()
    require("home-energy-server", "server", ("flask",) if args.cmd == "hash-password" else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "hash-password":
        from werkzeug.security import generate_password_hash

        print(generate_password_hash(args.password or getpass.getpass("password: ")))
        return 0
    if args.cmd in ("backup", "restore"):
        return backup.main(args)
    from server.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "worker":
        import signal

        from server.jobs import Worker
        from server.state import build_state

        worker = Worker(build_state(cfg))
        # gunicorn stops it with SIGTERM: running jobs are cancelled (their Ray tasks stopped), Ray shut down
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        worker.run_forever()
        return 0
    from server import create_app

    create_app(cfg, start_worker=True).run(host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
