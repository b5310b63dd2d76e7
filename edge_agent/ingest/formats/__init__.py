"""Payload formats → points. Each parser raises `Reject(reason, detail)` for bad input; nothing is guessed.

Formats (a rule's `format`; docs/edge-agent.md has the reference, docs/devices.md the device families):
- `seed_json` (seed.py): the hackathon's devices, FeatureType = measurement.
- `tasmota` (tasmota.py): `tele/<dev>/SENSOR`, every sensor object (ENERGY, SML meters, …) one point.
- `number`/`shelly_gen1`, `shelly_gen2` (shelly.py): plain numbers; Shelly gen2/gen3/gen4 component status and
  notifications (NotifyStatus, NotifyFullStatus; NotifyEvent ignored), filtered by `components`.
- `json` (generic.py): any JSON object, mapped by paths and globs compiled at config load.
- `csv`, `key_value` (text.py): text payloads (`1.5,230,0`, `soc=87,p=-1250`) mapped like `json`.

Besides points a parser may raise `Reject` (dead-lettered with the reason) or `Ignored` (a normal message with
nothing to store: counted, not dead-lettered), and report numbers sent as text that it did not store
(`Points.skipped`).

A format is compiled once per rule (`compile_format`): settings that come from the configuration (paths,
globs, time formats) are checked and prepared then, never per message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.ingest.formats.base import (
    BoundParser,
    FormatConfigError,
    Ignored,
    Points,
    Reject,
    numeric_leaves,
    parse_time,
)
from edge_agent.ingest.formats.generic import compile_json
from edge_agent.ingest.formats.seed import parse_seed_json
from edge_agent.ingest.formats.shelly import compile_shelly_gen2, parse_number
from edge_agent.ingest.formats.tasmota import compile_tasmota
from edge_agent.ingest.formats.text import compile_csv, compile_key_value
from edge_agent.ingest.formats.units import conversion_factor

Parser = Callable[..., list]  # (rule config, named levels, payload, received_ns) -> points

JSON_KEYS = frozenset({"fields", "include", "exclude", "separator", "numeric_strings", "measurement_path",
                       "tag_paths", "time_path", "time_format"})
# The text formats map like json; their values are text anyway, and their objects are flat.
TEXT_KEYS = JSON_KEYS - {"numeric_strings", "separator"} | {"delimiter"}


@dataclass(frozen=True)
class Format:
    compile: Callable[[object], BoundParser]
    keys: frozenset[str] = frozenset()  # the format-specific rule keys it reads (others must stay unset)


def _plain(parser: Parser) -> Callable[[object], BoundParser]:
    return lambda rule: functools.partial(parser, rule)


FORMATS: dict[str, Format] = {
    "seed_json": Format(_plain(parse_seed_json)),
    "tasmota": Format(compile_tasmota, frozenset({"sensor_as", "numeric_strings"})),
    "shelly_gen1": Format(_plain(parse_number)),
    "number": Format(_plain(parse_number)),
    "shelly_gen2": Format(compile_shelly_gen2, frozenset({"components"})),
    "json": Format(compile_json, JSON_KEYS),
    "csv": Format(compile_csv, TEXT_KEYS | {"columns"}),
    "key_value": Format(compile_key_value, TEXT_KEYS | {"assign"}),
}
FORMAT_KEYS = frozenset().union(*(f.keys for f in FORMATS.values()))  # every format-specific key


def compile_format(rule) -> BoundParser:
    """The rule's parser, bound to its compiled settings; raises FormatConfigError (naming the key) or KeyError
    for an unknown format."""
    return FORMATS[rule.format].compile(rule)


__all__ = ["FORMATS", "FORMAT_KEYS", "BoundParser", "Format", "FormatConfigError", "Ignored", "Parser",
           "Points", "Reject",
           "compile_format", "conversion_factor", "numeric_leaves", "parse_seed_json", "parse_time"]
