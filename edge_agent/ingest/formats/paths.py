"""Value paths and globs for the `json` format, compiled once when the configuration is loaded.

Path syntax (like Home Assistant's value paths and Telegraf json_v2's GJSON, reduced to what devices need):
- `a.b.c` — keys of nested objects; `a[0]`, `a[-1]` — array elements; `*` / `[*]` — every key or element;
- `["key.with.dots"]` — a key that holds `.`, `[` or `]` (inside the quotes `\\"` and `\\\\` escape).
Globs (`include`/`exclude`) match the dotted path of a leaf as a whole: `*` is any run of characters (dots
included), `?` one character, everything else is literal (`[0]` is the text `[0]`, not a character class).
They are matched in time linear in the path's length for each segment between stars, never by a backtracking
regular expression: `*_*_*_total` as `.*_.*_.*_total` took over 120 s on one 60 KB key (issue 23).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

KEY, INDEX, ANY = 0, 1, 2
MISSING = object()


class PathError(ValueError):
    pass


@dataclass(frozen=True)
class Path:
    text: str
    steps: tuple[tuple[int, object], ...]  # (KEY, str) | (INDEX, int) | (ANY, None)
    wildcard: bool = False  # set by compile_path: some step is '*'

    @property
    def dotted(self) -> str:
        """The path as `numeric_leaves` spells it (for telling explicit fields and glob matches apart)."""
        out = ""
        for kind, arg in self.steps:
            if kind == INDEX:
                out += f"[{arg}]"
            else:
                out += ("." if out else "") + ("*" if kind == ANY else str(arg))
        return out

    def get(self, doc: object) -> object:
        """The value at this (wildcard-free) path, or MISSING."""
        if len(self.steps) == 1 and self.steps[0][0] == KEY:  # the common case: a top-level key
            return doc.get(self.steps[0][1], MISSING) if type(doc) is dict else MISSING
        value = doc
        for kind, arg in self.steps:
            if kind == KEY:
                if type(value) is not dict:
                    return MISSING
                value = value.get(arg, MISSING)
                if value is MISSING:
                    return MISSING
            else:
                if type(value) is not list or not -len(value) <= arg < len(value):
                    return MISSING
                value = value[arg]
        return value

    def find(self, doc: object) -> Iterator[tuple[tuple[str | int, ...], object]]:
        """Every (concrete key/index tuple, value) the path matches, in document order."""
        yield from _find(doc, self.steps, 0, ())

    def name(self, concrete: tuple[str | int, ...], sep: str) -> str:
        return sep.join(str(k) for k in concrete)


def _find(value: object, steps, i: int, concrete: tuple) -> Iterator[tuple[tuple, object]]:
    if i == len(steps):
        yield concrete, value
        return
    kind, arg = steps[i]
    if kind == KEY:
        if type(value) is dict and arg in value:
            yield from _find(value[arg], steps, i + 1, (*concrete, arg))
    elif kind == INDEX:
        if type(value) is list and -len(value) <= arg < len(value):
            yield from _find(value[arg], steps, i + 1, (*concrete, arg % len(value)))
    elif type(value) is dict:
        for key, child in value.items():
            yield from _find(child, steps, i + 1, (*concrete, key))
    elif type(value) is list:
        for k, child in enumerate(value):
            yield from _find(child, steps, i + 1, (*concrete, k))


_PLAIN = re.compile(r"[^.\[\]\"]+")


def compile_path(text: object) -> Path:
    """Parse a path; raises PathError saying what is wrong and where."""
    if not isinstance(text, str) or not text:
        raise PathError(f"a path must be a non-empty string, got {text!r}")
    steps: list[tuple[int, object]] = []
    i, n = 0, len(text)
    expect_key = True  # at the start and after '.'
    while i < n:
        c = text[i]
        if c == "[":
            end = _bracket(text, i, steps)
            i, expect_key = end, False
            continue
        if c == ".":
            if expect_key:
                raise PathError(f"path {text!r}: empty key at character {i + 1}")
            i, expect_key = i + 1, True
            continue
        if not expect_key:
            raise PathError(f"path {text!r}: '.' or '[' expected at character {i + 1}")
        m = _PLAIN.match(text, i)
        if not m:
            raise PathError(f"path {text!r}: unexpected {c!r} at character {i + 1}")
        key = m.group()
        steps.append((ANY, None) if key == "*" else (KEY, key))
        i, expect_key = m.end(), False
    if expect_key:
        raise PathError(f"path {text!r} ends with '.'")
    return Path(text, tuple(steps), any(kind == ANY for kind, _ in steps))


def _bracket(text: str, i: int, steps: list) -> int:
    """Parse `[n]`, `[*]` or `["key"]` at text[i] == '['; returns the index after ']'."""
    close = text.find("]", i)
    if i + 1 < len(text) and text[i + 1] == '"':
        j, key = i + 2, ""
        while j < len(text) and text[j] != '"':
            if text[j] == "\\" and j + 1 < len(text):
                j += 1
            key += text[j]
            j += 1
        if j + 1 >= len(text) or text[j + 1] != "]":
            raise PathError(f"path {text!r}: quoted key at character {i + 1} must end with '\"]'")
        steps.append((KEY, key))
        return j + 2
    if close < 0:
        raise PathError(f"path {text!r}: '[' at character {i + 1} is not closed")
    inner = text[i + 1:close]
    if inner == "*":
        steps.append((ANY, None))
    else:
        try:
            steps.append((INDEX, int(inner)))
        except ValueError:
            raise PathError(f"path {text!r}: [{inner}] is not an index, '*' or a quoted key") from None
    return close + 1


class Glob:
    """One glob. The segments between stars have a fixed length (`?` is one character), so the last sits at
    the end, the first at the start, and each one between is best placed at its leftmost fit after the previous:
    a search per segment instead of backtracking."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.segments = [re.compile("".join("." if c == "?" else re.escape(c) for c in seg), re.DOTALL)
                         for seg in pattern.split("*")]
        self.lengths = [len(seg) for seg in pattern.split("*")]

    def fullmatch(self, text: str) -> bool:
        first, *middle, last = self.segments if len(self.segments) > 1 else (self.segments[0], None)
        if last is None:
            return first.fullmatch(text) is not None
        pos, end = self.lengths[0], len(text) - self.lengths[-1]
        if end < pos or not first.match(text) or not last.fullmatch(text, end):
            return False
        for segment in middle:
            m = segment.search(text, pos, end)
            if m is None:
                return False
            pos = m.end()
        return True


class GlobSet:
    """Several globs: a path matches if any one matches it."""

    def __init__(self, patterns: list[str]):
        self.globs = [Glob(p) for p in patterns]

    def fullmatch(self, text: str) -> bool:
        return any(g.fullmatch(text) for g in self.globs)


def compile_globs(patterns: object, key: str) -> GlobSet | None:
    """The globs of a list (None for an empty list)."""
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise PathError(f"{key} must be a list of non-empty strings")
    if not patterns:
        return None
    return GlobSet(patterns)
