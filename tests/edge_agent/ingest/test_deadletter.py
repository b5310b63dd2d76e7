"""Dead-letter framing across power cuts: a torn write never swallows the next entry, lines read back."""

from __future__ import annotations

import json

from edge_agent.ingest.deadletter import DeadLetter, parse_line, read_entries


def entry(i: int) -> dict:
    return DeadLetter.entry(f"junk/{i}", f"payload {i}".encode(), "not_json", "x", None)


def test_a_torn_write_does_not_swallow_the_next_entry(tmp_path):
    """Issue 24: a cut during a dead-letter write left a fragment without its newline; the next entry was
    appended to it, and the line held neither."""
    path = tmp_path / "deadletter.jsonl"
    dl = DeadLetter(path)
    dl.write([entry(1)])
    dl.close()
    with open(path, "ab") as f:  # what a power cut leaves of the next write: part of an entry, then zeros
        f.write(json.dumps(entry(2)).encode()[:37] + bytes(300))
    dl = DeadLetter(path)
    assert dl.torn_bytes == 37 + 300
    dl.write([entry(3)])
    dl.close()
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["topic"] for line in lines] == ["junk/1", "junk/3"]


def test_read_entries_finds_an_entry_behind_garbage(tmp_path):
    path = tmp_path / "deadletter.jsonl"
    good = json.dumps(entry(5))
    path.write_bytes(json.dumps(entry(4)).encode() + b"\n" + b'\x00\x00{"time": "20' + good.encode() + b"\n"
                     + b"not json at all\n" + b'{"torn"')
    entries, bad = read_entries(path)
    assert [e["topic"] for e in entries] == ["junk/4", "junk/5"] and bad == 2
    assert parse_line(b'{"a": "{\\"b\\": 1}"}\n') == {"a": '{"b": 1}'}
