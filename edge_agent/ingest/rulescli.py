"""`edge-agent rules …`: write rules against what devices really send, without guessing.

- `rules test --config F --topic T (--payload P | --payload-file F)`: the points a message becomes, as line
  protocol, or why it is rejected and by which rule — through the agent's own converter, touching no broker
  and no database (like `telegraf --test`).
- `rules list --config F`: the rules in the order they are tried, what each subscribes to, rules that never
  get a message (an earlier rule takes all their topics), and which rules take the topics of the subscriptions.
- `rules list --config F --sniff N`: connects to the broker and prints the first N messages of every topic
  (retained ones included) with the rule that would take each and what it makes of it. Read-only: its own
  client id, a clean session and QoS 0 subscriptions, so it acknowledges nothing (the agent's persistent session
  keeps every message queued for it) and leaves no session or subscription behind.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import paho.mqtt.client as mqtt

from edge_agent.config import AgentConfig, ConfigError, load_config
from edge_agent.ingest.convert import Converter
from edge_agent.ingest.formats import Reject
from edge_agent.ingest.formats.base import parse_time
from edge_agent.ingest.rules import Router, load_rules


@dataclass
class _Message:
    topic: str
    payload: bytes
    qos: int = 0


def _load(path: str) -> tuple[AgentConfig, Router] | None:
    try:
        cfg = load_config(path)
        return cfg, Router(load_rules(cfg))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return None


def explain(router: Router, converter: Converter, topic: str, payload: bytes, received_ns: int) -> tuple[bool, str]:
    """(converted?, text): the line protocol a message becomes, or why not, with the rule that took it; a message
    a rule ignores by design (nothing to store, nothing wrong) counts as converted."""
    found = router.match(topic)
    out = converter.convert([_Message(topic, payload)], received_ns)
    if out.rejects:
        r = out.rejects[0]
        by = f" by rule {found[0].name!r}" if found else ""
        return False, f"# rejected{by}: {r['reason']}: {r['detail']}"
    rule = found[0]
    if out.ignored:
        return True, f"# ignored by rule {rule.name!r} (not dead-lettered, counted as ignored): " \
                     f"{out.ignored[0]['detail']}"
    lines = out.body.decode().rstrip("\n")
    notes = "".join(f"\n# note: {path} is a number sent as text ({text!r}) and is not stored: set numeric_strings "
                    f"= true in rule {rule.name!r}" for s in out.skipped for path, text in s["skipped"])
    return True, (f"# rule {rule.name!r} ({rule.config.format}, {rule.pattern.text}): {out.points} point(s)\n"
                  f"{lines}{notes}")


def cmd_test(args) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return 2
    cfg, router = loaded
    if args.payload_file is not None:
        try:
            payload = sys.stdin.buffer.read() if args.payload_file == "-" else Path(args.payload_file).read_bytes()
        except OSError as exc:
            print(f"cannot read {args.payload_file}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        payload = args.payload.encode("utf-8")
    if args.time:
        try:
            received_ns = parse_time(args.time if not args.time.isdigit() else int(args.time))
        except Reject as rej:
            print(f"--time: {rej.detail}", file=sys.stderr)
            return 2
    else:
        received_ns = time.time_ns()
    ok, text = explain(router, Converter(router, cfg.ingest.max_payload_bytes), args.topic, payload, received_ns)
    print(text)
    subs = cfg.mqtt.subscribe or router.subscriptions
    if not any(mqtt.topic_matches_sub(s, args.topic) for s in subs):
        print(f"# note: the agent does not subscribe to {args.topic} (subscriptions: {', '.join(subs)})")
    return 0 if ok else 1


def covers(wide: str, narrow: str) -> bool:
    """Whether MQTT filter `wide` matches every topic filter `narrow` matches."""
    w, n = wide.split("/"), narrow.split("/")
    for i, level in enumerate(n):
        if i >= len(w):
            return False
        if w[i] == "#":
            return True
        if level == "#" or (w[i] != "+" and (level == "+" or w[i] != level)):
            return False
    return len(w) == len(n) or (len(w) == len(n) + 1 and w[-1] == "#")


def overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT filters."""
    x, y = a.split("/"), b.split("/")
    for i in range(max(len(x), len(y))):
        p = x[i] if i < len(x) else None
        q = y[i] if i < len(y) else None
        if p == "#" or q == "#":
            return True
        if p is None or q is None:
            return False
        if p != "+" and q != "+" and p != q:
            return False
    return True


def describe(cfg: AgentConfig, router: Router, out: TextIO) -> None:
    out.write(f"rules in {cfg.path} (tried in this order; the first whose topic pattern matches takes the "
              "message):\n")
    for i, rule in enumerate(router.rules, 1):
        c = rule.config
        out.write(f"{i:3}. {rule.name}  [{c.format}]  {rule.pattern.text}\n")
        out.write(f"       subscribes: {', '.join(rule.pattern.subscriptions)}\n")
        named = [lv[1:] for lv in rule.pattern.levels if lv[:1] in "+#" and lv[1:]]
        tags = sorted({n for n in named if n not in ("measurement", "field")} | set(c.tags) | set(c.tag_paths)
                      | ({"sensor"} if c.format == "tasmota" and c.sensor_as == "tag" else set())
                      | ({"component"} if c.format == "shelly_gen2" else set()))
        measurement = ("the sensor object's name" if c.format == "tasmota" and c.sensor_as == "measurement"
                       else f"the payload's {c.measurement_path}" if c.measurement_path
                       else "the topic's +measurement level" if "measurement" in named and not c.measurement
                       else c.measurement or {"tasmota": "tasmota", "shelly_gen2": "shelly",
                                              "seed_json": "FeatureType"}.get(c.format, "mqtt"))
        out.write(f"       measurement: {measurement}; tags: {', '.join(tags) or '-'}\n")
        if c.format == "shelly_gen2":
            out.write(f"       components: {', '.join(c.components) if c.components else 'all but the housekeeping'}"
                      " (NotifyEvent and components without numbers are ignored)\n")
        for j, earlier in enumerate(router.rules[:i - 1], 1):
            if all(any(covers(w, s) for w in earlier.pattern.subscriptions) for s in rule.pattern.subscriptions):
                out.write(f"       NEVER USED: rule {j} ({earlier.name}) takes every topic this one matches\n")
                break
    configured = cfg.mqtt.subscribe
    subs = configured or router.subscriptions
    out.write("subscriptions (" + ("mqtt.subscribe" if configured else "from the rules; set mqtt.subscribe to "
                                                                         "override") + "):\n")
    for s in subs:
        takers = [f"{i} ({r.name})" for i, r in enumerate(router.rules, 1)
                  if any(overlap(s, p) for p in r.pattern.subscriptions)]
        out.write(f"  {s}  → rule {', '.join(takers)}\n" if takers else
                  f"  {s}  → no rule: its messages are dead-lettered (unknown_topic)\n")


def cmd_list(args) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return 2
    cfg, router = loaded
    if args.sniff is None:
        describe(cfg, router, sys.stdout)
        return 0
    filters = args.filter or ["#"]
    bad = [f for f in filters if not _valid_filter(f)]
    if args.sniff < 1 or bad:
        print(f"--sniff needs N >= 1 and valid MQTT topic filters (bad: {', '.join(bad) or '-'})", file=sys.stderr)
        return 2
    return sniff(cfg, router, args.sniff, args.seconds, filters, sys.stdout)


def _valid_filter(f: str) -> bool:
    levels = f.split("/")
    return bool(f) and "\x00" not in f and all(
        lv in ("+", "#") or ("+" not in lv and "#" not in lv) for lv in levels) and "#" not in levels[:-1]


def _payload_text(payload: bytes, limit: int = 300) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"{payload[:limit]!r} (not UTF-8, {len(payload)} bytes)"
    return text if len(text) <= limit else f"{text[:limit]}… ({len(payload)} bytes)"


def own_topic(cfg: AgentConfig, topic: str) -> str | None:
    """What the agent itself does with `topic`, if it is one of its own: its output and away input under
    `[publish].topic_prefix`, its Home Assistant discovery configs (`<discovery_prefix>/<component>/<node_id>/…`)."""
    pub = cfg.publish
    if topic == pub.topic_prefix or topic.startswith(pub.topic_prefix + "/"):
        rest = topic[len(pub.topic_prefix) + 1:]
        if rest == "away" or rest.startswith("away/"):
            return "the agent's away input and state"
        return "the agent's own output"
    parts = topic.split("/")
    if len(parts) >= 4 and parts[0] == pub.discovery_prefix and parts[2] == pub.node_id:
        return "the agent's Home Assistant discovery"
    return None


@dataclass
class _Seen:
    count: int = 0
    first: float = 0.0  # monotonic, live messages only
    last: float = 0.0
    live: int = 0  # messages not retained


def sniff(cfg: AgentConfig, router: Router, per_topic: int, seconds: float, filters: list[str],
          out: TextIO) -> int:
    """Print the first `per_topic` messages of each topic under `filters` for `seconds`, with what the rules make
    of them. Returns 0, or 1 when the broker cannot be reached."""
    from edge_agent.runtime.mqtt_client import make_client

    client_id = f"{cfg.mqtt.client_id}-sniff-{os.getpid()}"
    client = make_client(cfg, client_id, manual_ack=False, clean_session=True)
    messages: queue.Queue = queue.Queue()
    connected, subscribed = threading.Event(), threading.Event()
    failure: list[str] = []

    def on_connect(c, userdata, flags, reason, properties=None):
        if reason.is_failure:
            failure.append(str(reason))
            connected.set()
            return
        c.subscribe([(f, 0) for f in filters])  # QoS 0: the broker expects no acknowledgement
        connected.set()

    def on_message(c, userdata, msg):
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = bytes(msg._topic).decode("utf-8", errors="replace")
        messages.put((topic, bytes(msg.payload), msg.retain, time.time_ns()))

    client.on_connect = on_connect
    client.on_subscribe = lambda *a, **k: subscribed.set()
    client.on_message = on_message
    where = f"MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
    except OSError as exc:
        print(f"{where} unreachable: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    started = time.monotonic()
    try:
        if not connected.wait(10) or failure:
            print(f"{where} refused the connection: {failure[0] if failure else 'no answer'}", file=sys.stderr)
            return 1
        if not subscribed.wait(10):
            print(f"{where} did not confirm the subscription to {', '.join(filters)}", file=sys.stderr)
            return 1
        print(f"sniffing {', '.join(filters)} on {cfg.mqtt.host}:{cfg.mqtt.port} for {seconds:g} s as {client_id} "
              "(clean session, QoS 0: nothing is acknowledged, nothing stays behind)", file=sys.stderr, flush=True)
        started = time.monotonic()
        seen = _sniff_loop(cfg, router, messages, per_topic, started + seconds, out)
    except KeyboardInterrupt:
        seen = {}
    finally:
        client.disconnect()
        client.loop_stop()
    _summary(cfg, router, seen, min(seconds, time.monotonic() - started), filters, out)
    out.flush()
    return 0


def _summary(cfg: AgentConfig, router: Router, seen: dict[str, _Seen], window: float, filters: list[str],
             out: TextIO) -> None:
    """Totals, the topics no rule takes, and what the window may have been too short to see."""
    own = sorted(t for t in seen if router.match(t) is None and own_topic(cfg, t))
    unrouted = sorted(t for t in seen if router.match(t) is None and t not in own)
    out.write(f"# {sum(s.count for s in seen.values())} message(s) on {len(seen)} topic(s)")
    if own:
        out.write(f"; {len(own)} of the agent's own (output, away input, discovery: not ingested)")
    out.write(f"; no rule takes {len(unrouted)}: {', '.join(unrouted[:20])}{' …' if len(unrouted) > 20 else ''}\n"
              if unrouted else "\n")
    # Periods: a topic seen live at least twice shows its period; one seen once may repeat less often than the
    # window; a rule that saw nothing may have devices that publish less often (Tasmota: TelePeriod, 300 s by
    # default) or none on this broker.
    slow = sorted(t for t, s in seen.items() if s.live == 1 and t not in own)
    if slow:
        out.write(f"# seen once in {window:.0f} s (a period of {window:.0f} s or more, or unknown): "
                  f"{', '.join(slow[:10])}{' …' if len(slow) > 10 else ''}\n")
    periods = sorted((s.last - s.first) / (s.live - 1) for s in seen.values() if s.live >= 2)
    silent = [r for r in router.rules
              if any(any(overlap(f, sub) for f in filters) for sub in r.pattern.subscriptions)
              and not any(r.pattern.match(t) is not None for t in seen)]
    if silent:
        names = ", ".join(r.name for r in silent[:10]) + (" …" if len(silent) > 10 else "")
        out.write(f"# no message in {window:.0f} s for rule(s) {names}: a device may publish less often than the "
                  f"window (Tasmota's TelePeriod is 300 s by default): sniff longer (--seconds 300) before "
                  "concluding it sends nothing\n")
    if window < 60:
        longest = f" (the slowest topic here repeats every {periods[-1]:.0f} s)" if periods else ""
        out.write(f"# a window of {window:.0f} s is shorter than many devices' period{longest}; the default is "
                  "60 s\n")


def _sniff_loop(cfg: AgentConfig, router: Router, messages: queue.Queue, per_topic: int, deadline: float,
                out: TextIO) -> dict[str, _Seen]:
    converter = Converter(router, cfg.ingest.max_payload_bytes)
    agent_subs = cfg.mqtt.subscribe or router.subscriptions
    seen: dict[str, _Seen] = {}
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload, retained, received_ns = messages.get(timeout=min(left, 0.2))
        except queue.Empty:
            continue
        s = seen.setdefault(topic, _Seen())
        s.count += 1
        if not retained:
            now = time.monotonic()
            s.first = s.first if s.live else now
            s.last, s.live = now, s.live + 1
        if s.count > per_topic:
            continue
        flags = " (retained)" if retained else ""
        label = own_topic(cfg, topic) if router.match(topic) is None else None
        if not label and not any(mqtt.topic_matches_sub(sub, topic) for sub in agent_subs):
            flags += " (the agent does not subscribe to it)"
        if label:
            text = f"# {label}: not ingested"
        else:
            _, text = explain(router, converter, topic, payload, received_ns)
        out.write(f"{topic}{flags}\n  payload: {_payload_text(payload)}\n")
        out.write("".join(f"  {line}\n" for line in text.splitlines()))
        out.flush()
    return seen


def add_subcommand(sub) -> None:
    rules = sub.add_parser("rules", help="test the rules on a message, list them, sniff the broker")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    test = rsub.add_parser("test", help="what one message becomes (no broker, no database)")
    test.add_argument("--config", required=True)
    test.add_argument("--topic", required=True)
    src = test.add_mutually_exclusive_group(required=True)
    src.add_argument("--payload", help="the payload as text")
    src.add_argument("--payload-file", help="read the payload from this file (- for stdin)")
    test.add_argument("--time", help="receive time (ISO 8601 or epoch; default now) for payloads without one")
    test.set_defaults(func=cmd_test)
    lst = rsub.add_parser("list", help="the rules, their subscriptions and which rule takes which topic")
    lst.add_argument("--config", required=True)
    lst.add_argument("--sniff", type=int, metavar="N",
                     help="connect read-only and show the first N messages per topic with the rule for each")
    lst.add_argument("--seconds", type=float, default=60.0,
                     help="how long to sniff (default 60: many devices publish every 10-60 s, Tasmota every 300 s)")
    lst.add_argument("--filter", action="append", metavar="TOPIC_FILTER",
                     help="what to sniff (repeatable; default '#': everything the broker carries)")
    lst.set_defaults(func=cmd_list)
