"""Run pieces of the Ansible roles on this machine (connection local, no become) with the project's variables.

The chroot test cannot run what needs a running service; these helpers let tests run those very task files and
templates here instead: the roles' templates rendered by ansible's own engine, and role task files (e.g. the
InfluxDB setup) against services the tests start on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_BIN = ROOT / ".venv-ansible" / "bin"
AVAILABLE = (ANSIBLE_BIN / "ansible-playbook").exists()
SKIP_REASON = "no .venv-ansible (make venv-ansible)"
GROUP_VARS = ROOT / "ansible" / "group_vars"
ROLES = ROOT / "ansible" / "roles"
# The example vault's values (flat `key: value` lines), for tests that use the same credentials as the play.
VAULT = {k: v.strip().strip('"') for k, v in (line.split(": ", 1) for line in
                                              (GROUP_VARS / "vault.example.yml").read_text().splitlines()
                                              if line.startswith("vault_"))}


class PlayFailed(Exception):
    def __init__(self, doc: dict, stdout: str, stderr: str):
        super().__init__(f"ansible-playbook failed: {stderr[-2000:]}")
        self.doc, self.stdout, self.stderr = doc, stdout, stderr


def play(tmp: Path, tasks: list[dict], extra: dict | None = None, gather_facts: bool = False,
         roles_defaults: tuple[str, ...] = (), handlers: list[dict] | None = None) -> dict:
    """Run `tasks` (and `handlers`) on localhost with group_vars/all.yml, the example vault, the given roles'
    defaults and `extra` (as -e, the highest precedence). Returns the json callback's document; raises
    PlayFailed."""
    tmp.mkdir(parents=True, exist_ok=True)
    files = [str(GROUP_VARS / "all.yml"), str(GROUP_VARS / "vault.example.yml")]
    files += [str(ROLES / r / "defaults" / "main.yml") for r in roles_defaults]
    book = tmp / "play.yml"
    book.write_text(json.dumps([{"name": "Local", "hosts": "localhost", "connection": "local",
                                 "gather_facts": gather_facts, "vars_files": files, "tasks": tasks,
                                 "handlers": handlers or []}]))
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_ROLES_PATH": str(ROLES),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
           "ANSIBLE_LOCAL_TEMP": str(tmp / ".ansible-tmp"), "ANSIBLE_REMOTE_TEMP": str(tmp / ".ansible-tmp")}
    variables = {"ansible_python_interpreter": "/usr/bin/python3", **(extra or {})}
    r = subprocess.run([str(ANSIBLE_BIN / "ansible-playbook"), "-i", "localhost,", str(book),
                        "-e", json.dumps(variables)], cwd=tmp, capture_output=True, text=True, env=env, timeout=300)
    try:
        doc = json.loads(r.stdout[r.stdout.index("{"):])
    except ValueError:
        doc = {}
    if r.returncode != 0:
        raise PlayFailed(doc, r.stdout, r.stderr)
    return doc


def task_results(doc: dict) -> dict[str, dict]:
    """Task name (without the "role : " prefix) -> the localhost result."""
    return {t["task"]["name"].split(" : ", 1)[-1]: t["hosts"].get("localhost", {})
            for p in doc.get("plays", []) for t in p["tasks"]}


def changed(doc: dict) -> int:
    return sum(s.get("changed", 0) for s in doc.get("stats", {}).values())


def render(tmp: Path, role: str, template: str, extra: dict | None = None, gather_facts: bool = False) -> str:
    """A role's template rendered by ansible with the project's variables (role defaults included)."""
    out = tmp / "rendered" / template.removesuffix(".j2")
    out.parent.mkdir(parents=True, exist_ok=True)
    play(tmp, [{"name": "Render", "ansible.builtin.template": {
        "src": str(ROLES / role / "templates" / template), "dest": str(out), "mode": "0600"}}],
         extra, gather_facts, roles_defaults=(role,))
    return out.read_text()
