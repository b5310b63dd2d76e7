"""`home-energy-server` and `home-energy-train` where only the core package is installed (numpy, cryptography: no
`server` or `training` extra): they say which extra to install and how, with exit status 2 — not a traceback from
`import flask` or `import tensorflow`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cryptography
import numpy
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def core_only(tmp_path):
    """A Python that sees the repository and the core dependencies only: no site-packages (-S), numpy and
    cryptography linked into a folder of their own."""
    site = tmp_path / "site"
    site.mkdir()
    wanted = {"numpy", "cryptography", "cffi", "_cffi_backend", "pycparser"}
    for parent in {Path(numpy.__file__).parents[1], Path(cryptography.__file__).parents[1]}:
        for p in parent.iterdir():
            if p.name.split("-")[0].split(".")[0] in wanted and not (site / p.name).exists():
                (site / p.name).symlink_to(p)

    def run(module: str, *args: str) -> subprocess.CompletedProcess:
        code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(site)!r}]; sys.argv[0] = 'x'; "
                f"from {module} import main; sys.exit(main())")
        return subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)

    return run


@pytest.mark.parametrize(("module", "args", "extra", "absent"), [
    ("server.__main__", ("run",), "server", "flask"),
    ("server.__main__", ("hash-password", "--password", "x"), "server", "flask"),
    ("training.cli", ("train", "--data", "x.csv", "--out", "out"), "training", "tensorflow"),
    ("training.cli", ("backtest", "--bundle", "b", "--data", "x.csv", "--start", "2023-01-01T00:00:00Z", "--end",
                      "2023-01-02T00:00:00Z", "--out", "o"), "training", "ai_edge_litert")])
def test_a_script_without_its_extra_says_what_to_install(core_only, module, args, extra, absent):
    r = core_only(module, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert f"the '{extra}' extra is not installed" in r.stderr and absent in r.stderr
    assert f"pip install 'home-energy[{extra}]'" in r.stderr and f"pip install '.[{extra}]'" in r.stderr


def test_the_core_python_really_lacks_them(core_only):
    """The test above would pass for the wrong reason if the extras were importable there."""
    r = core_only("shared.extras")
    assert r.returncode != 0 and "cannot import name 'main'" in r.stderr  # imports work: the path is right
    code = "import importlib.util as u; print([u.find_spec(m) is None for m in ('flask', 'tensorflow', 'numpy')])"
    probe = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "[True, True, True]", probe
