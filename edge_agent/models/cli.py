"""`python -m edge_agent models push|status|rollback|forecast` — a shell client for the agent's model API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _client(args):
    from shared.agent_client import AgentClient, ApiError

    token = (Path(args.token_file).read_text().strip() if args.token_file
             else os.environ.get("EDGE_AGENT_API_TOKEN", ""))
    if not token:
        print("error: give --token-file or set EDGE_AGENT_API_TOKEN", file=sys.stderr)
        raise SystemExit(2)
    try:
        return AgentClient(args.url, token, ca_file=args.ca_file)
    except ApiError as exc:
        print(f"error ({exc.code}): {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args) -> int:
    from shared.agent_client import ApiError

    client = _client(args)
    try:
        if args.action == "status":
            result = client.status()
        elif args.action == "push":
            result = [client.push(Path(b), allow_older=args.allow_older) for b in args.bundle]
        elif args.action == "rollback":
            result = client.rollback(args.name)
        else:
            result = client.forecast_now()
    except ApiError as exc:
        print(f"error ({exc.status} {exc.code}): {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def add_subcommand(sub) -> None:
    p = sub.add_parser("models", help="push, roll back and inspect models through the agent's API")
    p.add_argument("--url", default="http://127.0.0.1:8750", help="the agent's API (default %(default)s)")
    p.add_argument("--token-file", help="file holding the API token (else $EDGE_AGENT_API_TOKEN)")
    p.add_argument("--ca-file", help="https: the agent's certificate (self-signed) or its CA (default: system CAs)")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="active/previous versions, interpreter, counters")
    push = actions.add_parser("push", help="upload signed bundle directories")
    push.add_argument("bundle", nargs="+")
    push.add_argument("--allow-older", action="store_true", help="install even if older than the active version")
    rb = actions.add_parser("rollback", help="re-activate the previous version")
    rb.add_argument("name", help="cnn-1, lstm-1, cnn-96 or lstm-96")
    actions.add_parser("forecast", help="run one forecast cycle now")
    p.set_defaults(func=run)
