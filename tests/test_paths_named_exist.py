"""Every path and module the prose names exists: a moved module leaves no stale pointer behind.

Looked at: README.md, the Makefile, docs/*.md, every Python file of the project, and what deploys it (ansible/,
docker-compose.yml, the Dockerfiles). A path (`edge_agent/…`,
`shared/…`, `server/…`, `training/…`, `tools/…`, `tests/…`) must be a file or a folder (a glob must match
something; after an ellipsis or a placeholder such as `<name>` only the part before it counts). A dotted module
path in the prose (docs, comments, docstrings), e.g. `edge_agent.publish.hass.availability_topic`, must lead to a
module, and what follows the last module must be defined in it. And no template marker (a line that is only an
UPPER_SNAKE name, e.g. a results table a benchmark was meant to fill in) is left in what people read.
"""

from __future__ import annotations

import ast
import glob
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("edge_agent", "shared", "server", "training", "tools", "tests")
PATH = re.compile(r"(?<![\w/.\-~$])((?:" + "|".join(TOPS) + r")/[\w./*<>{}…\-]*)")
MODULE = re.compile(r"(?<![\w/.\-])((?:edge_agent|shared|server|training|tools)(?:\.[A-Za-z_]\w*)+)")
# Dotted names that are not modules: files (server.toml, server.sqlite) and the manifest's `training` keys.
NOT_MODULES = re.compile(r".*\.(toml|txt|sqlite|log|key|py|md|json|conf|j2)|training\.(quick|refit|seconds)(\..*)?")
PLACEHOLDER = re.compile(r"\s*[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\s*")
DEFINED = r"(?m)(^\s*(async\s+)?(def|class)\s+{n}\b|^\s*{n}\s*[:=]|\bimport\b[^\n]*\b{n}\b|^\s+{n},?$|\b{n}\s*=)"


def sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md")), ROOT / "docker-compose.yml",
             *sorted(ROOT.glob("*/Dockerfile")),
             *sorted(p for p in (ROOT / "ansible").rglob("*") if p.suffix in (".md", ".py", ".yml", ".j2"))]
    here = Path(__file__).resolve()  # names stale paths on purpose
    return files + [p for top in TOPS for p in sorted((ROOT / top).rglob("*.py")) if p != here]


def path_exists(ref: str) -> bool:
    ref = ref.rstrip(".,:;)`'\"")
    for cut in ("…", "...", "<", "{"):
        if cut in ref:  # `edge_agent/ingest/formats/…`, `edge_agent/examples/<name>.toml`: the folder before it
            ref = ref[:ref.index(cut)]
            ref = ref if ref.endswith("/") else ref.rsplit("/", 1)[0]
    ref = ref.rstrip("/")
    if "*" in ref:
        return bool(glob.glob(str(ROOT / ref), recursive=True))
    return (ROOT / ref).exists()


def module_exists(ref: str) -> bool:
    parts = ref.split(".")
    path = ROOT / parts[0]
    for name in parts[1:]:
        if path.is_dir() and (path / name).is_dir():
            path = path / name
        elif path.is_dir() and (path / f"{name}.py").exists():
            path = path / f"{name}.py"
        else:  # an attribute of the module (or of the package's __init__)
            src = path / "__init__.py" if path.is_dir() else path
            return src.exists() and re.search(DEFINED.format(n=re.escape(name)), src.read_text()) is not None
    return True


def prose(p: Path):
    """(line number, text) of what p says in words: every line of a text file, a Python file's comments and
    docstrings."""
    text = p.read_text(errors="replace")
    if p.suffix != ".py":
        yield from enumerate(text.splitlines(), 1)
        return
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                for i, line in enumerate(first.value.value.splitlines()):
                    yield first.lineno + i, line


def test_every_path_named_exists():
    missing = []
    for p in sources():
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            missing += [f"{p.relative_to(ROOT)}:{n}: {m}" for m in PATH.findall(line) if not path_exists(m)]
    assert not missing, "named but not there:\n" + "\n".join(missing)


def test_every_module_named_exists():
    missing = []
    for p in sources():
        for n, line in prose(p):
            refs = (m.rstrip(".") for m in MODULE.findall(line))
            missing += [f"{p.relative_to(ROOT)}:{n}: {r}" for r in refs
                        if not NOT_MODULES.fullmatch(r) and not module_exists(r)]
    assert not missing, "named but not there:\n" + "\n".join(missing)


def test_the_check_sees_a_stale_path_and_a_stale_module():
    """The checks themselves: a moved file and a moved module are reported, a glob and an ellipsis are not."""
    assert not path_exists("edge_agent/ingest/mqtt.py") and not module_exists("edge_agent.ingest.mqtt.make_client")
    assert path_exists("edge_agent/runtime/mqtt_client.py") and module_exists("edge_agent.runtime.mqtt_client")
    assert module_exists("edge_agent.runtime.mqtt_client.make_client") and module_exists("edge_agent.api.SPEC")
    assert not module_exists("edge_agent.runtime.mqtt_client.no_such_name")
    assert path_exists("edge_agent/ingest/formats/…") and path_exists("tests/edge_agent/**/test_*.py")


def test_no_placeholder_left_in_the_docs():
    left = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in sources() if p.suffix == ".md"
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if PLACEHOLDER.fullmatch(line)]
    assert not left, "a placeholder nobody filled in:\n" + "\n".join(left)
    assert PLACEHOLDER.fullmatch("ROLLING_RESULTS") and not PLACEHOLDER.fullmatch("| 2022-11 | 0.917 |")
