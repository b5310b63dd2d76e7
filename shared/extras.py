"""What a console script needs beyond the core package, and what to install when it is missing.

`pip install home-energy` (or `.` from the source tree) installs what both halves share (numpy, cryptography);
each half's own needs are extras (pyproject.toml): `edge` on the Pi, `server` (with `training`) on the
workstation, `training` on a Ray node. A script whose extra is missing says so and how to install it, instead of a
traceback from deep inside an import. Only the standard library here: it must run where nothing else is installed.
"""

from __future__ import annotations

import importlib.util
import sys

# extra → (import names that must be there, what they are called when installing)
EXTRAS = {
    "server": (("flask", "gunicorn", "ray", "plotly", "requests", "ai_edge_litert"),
               "Flask, gunicorn, Ray, plotly, TensorFlow"),
    "training": (("tensorflow", "tf_keras", "ai_edge_litert", "holidays"),
                 "TensorFlow, tf_keras, ai-edge-litert, holidays"),
}


def missing(modules) -> list[str]:
    """The modules of `modules` that cannot be imported here (found without importing them)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def message(command: str, extra: str, absent: list[str]) -> str:
    what = EXTRAS[extra][1]
    return (f"{command}: the '{extra}' extra is not installed in this Python ({sys.executable}); "
            f"missing: {', '.join(absent)}.\n"
            f"It needs {what}. Install it into this environment:\n"
            f"    pip install 'home-energy[{extra}]'        (from a source tree: pip install '.[{extra}]'; "
            f"`make venv` installs everything)\n"
            f"On a Raspberry Pi only the edge agent runs (pip install '.[edge]'): train and serve on the "
            f"workstation.")


def require(command: str, extra: str, modules=None) -> None:
    """Exit with status 2 and the install hint when a module of the extra (or of `modules`) is missing."""
    absent = missing(EXTRAS[extra][0] if modules is None else modules)
    if absent:
        print(message(command, extra, absent), file=sys.stderr)
        raise SystemExit(2)
