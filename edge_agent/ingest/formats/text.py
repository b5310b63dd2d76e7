"""Payloads that are text, not JSON: `csv` (values in a fixed column order) and `key_value` (`key=value` lists).

- `csv`: `251.2,0,0,0,241.32` with the column names in the rule (`columns = ["power1", "power2", "", "",
  "vrms"]`, `""` skips a column; `delimiter`, default `,`). emonhub's legacy node topics
  (`emonhub/rx/<node>/values`, nodevar format) and other bridges that publish a record without names. Values
  beyond the named columns are not read (name them to store them); an empty value is missing.
- `key_value`: `p1=0,p2=0,w1=120,pe=14,vv=224` (`delimiter` between pairs, default `,`; `assign` between a key and
  its value, default `=`): battery relays and inverter bridges (Marstek/Hame B2500 ctrl messages, …). A pair
  without `assign` makes the message `wrong_type`; an empty value is missing; a key sent twice keeps the last.

Both give a flat object of strings to the `json` mapping (generic.py), with every value read as a number
written as text: `fields`, `include`/`exclude`, `map`, `convert`, `sign`, `tag_paths`, `time_path` work as there.
Values that are not numbers (`e1=0:0`, a firmware name) are not measurements and are left out unless a field
selects them (then `wrong_type`, or `map`).
"""

from __future__ import annotations

from edge_agent.ingest.formats.base import FormatConfigError, Reject, decode_text
from edge_agent.ingest.formats.generic import JsonRule
from shared.points import name_problem


def _delimiter(value: object, key: str) -> str:
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 8:
        raise FormatConfigError(key, f"must be 1-8 characters (e.g. \",\", \";\", \"\\t\"), got {value!r}")
    return value


def compile_csv(rule) -> JsonRule:
    delimiter = _delimiter(rule.delimiter, "delimiter")
    columns = rule.columns
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise FormatConfigError("columns", "needs the column names in order, e.g. [\"power1\", \"power2\", \"\", "
                                           "\"vrms\"] (\"\" skips a column)")
    for i, c in enumerate(columns):
        if c and (problem := name_problem(c, "column name")):
            raise FormatConfigError(f"columns[{i}]", problem)
    named = [c for c in columns if c]
    if not named:
        raise FormatConfigError("columns", "names no column")
    duplicates = sorted({c for c in named if named.count(c) > 1})
    if duplicates:
        raise FormatConfigError("columns", f"{', '.join(duplicates)} named twice")
    cols = tuple(columns)
    n = len(cols)

    def decode(payload: bytes) -> dict[str, str]:
        values = decode_text(payload).strip().split(delimiter, n)  # at most n + 1 parts: the rest is not read
        doc = {}
        for name, value in zip(cols, values, strict=False):
            value = value.strip()
            if name and value:
                doc[name] = value
        return doc

    return JsonRule(rule, decode, text=True)


def compile_key_value(rule) -> JsonRule:
    delimiter = _delimiter(rule.delimiter, "delimiter")
    assign = _delimiter(rule.assign, "assign")
    if assign in delimiter or delimiter in assign:
        raise FormatConfigError("assign", f"{assign!r} and the delimiter {delimiter!r} must differ")

    def decode(payload: bytes) -> dict[str, str]:
        doc = {}
        for item in decode_text(payload).split(delimiter):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition(assign)
            key = key.strip()
            if not eq or not key:
                raise Reject("wrong_type", f"{item[:40]!r} is not key{assign}value")
            value = value.strip()
            if value:
                doc[key] = value
            else:
                doc.pop(key, None)
        return doc

    return JsonRule(rule, decode, text=True)
