"""`edge-agent models push|status|rollback|forecast` — a shell client for the agent's model API.

`status` prints a short summary for people (`--json`: the whole status document, as the API returns it)."""

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
    if args.action == "status" and not args.json:
        print(summary(result, args.url))
    else:
        print(json.dumps(result, indent=2))
    return 0


def _when(text: str | None) -> str:
    return text.replace("T", " ").replace("Z", " UTC") if isinstance(text, str) else "never"


def _count(counters: dict, key: str) -> str:
    v = counters.get(key)
    return f"{int(v):,}" if isinstance(v, int | float) else "?"


def summary(st: dict, url: str) -> str:
    """A few lines for people: versions, what each model does now, what is served, ingest counts."""
    interp = st.get("interpreter") or {}
    lines = [f"Edge agent {st.get('agent_version', '?')} at {url} (interpreter {interp.get('name', '?')} "
             f"{interp.get('version', '')})".rstrip(),
             f"Last forecast: {_when(st.get('last_forecast'))}"]
    guard = st.get("guard") or {}
    verdicts = guard.get("models") or {}
    min_slots = guard.get("min_slots") or {}
    lines.append("Models:")
    for name, entry in sorted((st.get("models") or {}).items()):
        active = (entry or {}).get("active")
        if not active:
            lines.append(f"  {name:<8} none")
            continue
        v = verdicts.get(name) or {}
        state = v.get("state") or "not judged yet"
        if state == "learning":
            need = min_slots.get(str(v.get("horizon")), "?")
            state = f"learning ({v.get('slots', 0)} of {need} slots scored)"
        elif isinstance(v.get("skill"), int | float):
            state += f", skill {v['skill']:+.1%} vs {v.get('baseline') or 'the best baseline'} ({v.get('slots')} slots)"
        if v.get("reason") and v.get("state") == "shadow":
            state += f": {v['reason']}"
        previous = (entry.get("previous") or {}).get("version")
        lines.append(f"  {name:<8} {active.get('version')}  since {_when(active.get('activated_at'))}  {state}"
                     + (f"  (previous {previous})" if previous else ""))
    serving = guard.get("serving") or {}
    parts = []
    for horizon, label in (("1", "next 15 min"), ("96", "day ahead")):
        s = serving.get(horizon)
        if not s:
            parts.append(f"{label}: nothing yet")
            continue
        what = f"{s.get('name')} {s.get('version')}" if s.get("model") != "baseline" else f"baseline {s.get('version')}"
        parts.append(f"{label}: {what}" + (f" ({s['fallback_reason']})" if s.get("fallback_reason") else ""))
    lines.append("Serving: " + "; ".join(parts))
    c = st.get("counters") or {}
    lines.append(f"Ingest: {_count(c, 'received')} messages received, {_count(c, 'stored')} device points stored"
                 f" (+{_count(c, 'stored_own')} of the agent's own), {_count(c, 'rejected')} rejected, "
                 f"{_count(c, 'retries')} database retries")
    lines.append("(--json: the whole status)")
    return "\n".join(lines)


def add_subcommand(sub) -> None:
    p = sub.add_parser("models", help="push, roll back and inspect models through the agent's API")
    p.add_argument("--url", default="http://127.0.0.1:8750", help="the agent's API (default %(default)s)")
    p.add_argument("--token-file", help="file holding the API token (else $EDGE_AGENT_API_TOKEN)")
    p.add_argument("--ca-file", help="https: the agent's certificate (self-signed) or its CA (default: system CAs)")
    actions = p.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="active/previous versions, what is served, counters (a summary)")
    status.add_argument("--json", action="store_true", help="print the whole status document as JSON")
    push = actions.add_parser("push", help="upload signed bundle directories")
    push.add_argument("bundle", nargs="+")
    push.add_argument("--allow-older", action="store_true", help="install even if older than the active version")
    rb = actions.add_parser("rollback", help="re-activate the previous version")
    rb.add_argument("name", help="cnn-1, lstm-1, cnn-96 or lstm-96")
    actions.add_parser("forecast", help="run one forecast cycle now")
    p.set_defaults(func=run)
