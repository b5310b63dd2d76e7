"""`make test-pi`: the edge on Debian arm64 (bookworm = Raspberry Pi OS's base, Python 3.11; trixie, Python 3.13)
under qemu-user, from PyPI wheels only.

Per suite, in a fresh copy of the cached root (tools/pi/roots.py):
1. the package's own wheel, built here (`pip wheel --no-deps .`), installed with its `edge` extra into a venv inside
   the root with `--only-binary=:all:` (nothing compiles; no TensorFlow) — the wheel versions are recorded;
2. `edge-agent check --config …` inside the root, against a real Mosquitto and influxd that run on this host
   (a chroot shares the host's loopback; Debian's arm64 influxd under emulation would only time qemu);
3. the four bundles forecast at a few issue times from the real meter data through the agent's inference code with
   the interpreter it picks; the forecasts are compared with the same code on this host (x86 LiteRT);
4. `edge-agent run` inside the root takes `--messages` QoS 1 messages (unique values) from a publisher on this host
   into the database; stored points are counted exactly (no loss, no duplicate) and the agent must stop cleanly;
5. bookworm only (tflite-runtime has no wheel for Python 3.13): tflite-runtime 2.14 + numpy < 2 in a second venv
   runs each bundle and single-op models of their ops (tools/pi/single_ops.py), each in its own process, with and
   without XNNPACK, then the four bundles through the agent's inference code with it, and which of the single-op
   models the agent's guard refuses; what it does is reported (tests/pi asserts it is what docs/pi.md says).
Prints progress on stderr and one JSON line; exits 1 when a check fails, 2 when this host cannot run arm64 roots.
Every figure measured under emulation is an emulated figure, not a Pi figure (docs/pi.md has a Pi 4 estimate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tools.pi import roots
from tools.pi.roots import ArmRoot, PiSetupError, log

ROOT = roots.ROOT
CSV = ROOT / "data" / "seed_house" / "raw_data.csv"
ISSUES = ("2023-07-05T12:00:00Z", "2023-08-01T00:00:00Z", "2023-08-20T18:15:00Z")
NAMES = ("cnn-1", "lstm-1", "cnn-96", "lstm-96")
INSIDE = "/opt/pi"
VENV = f"{INSIDE}/venv"
# Forecasts on arm64 may differ from x86 by the kernels' int8 rounding: at most this many output quanta (LSB).
MAX_LSB = 1.0


class Problems(list):
    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.append(what)
            log(f"  PROBLEM: {what}")
        return ok


def build_wheel(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    # setuptools leaves build/lib behind; the wheel is what matters
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    shutil.rmtree(ROOT / "build" / "bdist.linux-x86_64", ignore_errors=True)
    return next(out.glob("home_energy-*.whl"))


def quick_bundles(out: Path) -> Path:
    """The four bundles, trained quickly on a slice of the real data (like the tests' seed_bundles fixture)."""
    log("training quick bundles on the real data (no --bundles given) …")
    subprocess.run([sys.executable, "-m", "training", "train", "--data", str(CSV), "--until", "2023-05-10T00:00:00Z",
                    "--out", str(out), "--quick"], cwd=ROOT, check=True, capture_output=True)
    return out


def agent_config(state: str, mqtt_port: int, influx_url: str, database: str, client_id: str) -> str:
    return f"""[agent]
state_dir = "{state}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client_id}"
reconnect_max_s = 2
[storage]
url = "{influx_url}"
database = "{database}"
[spool]
batch_interval_s = 0.5
[health]
interval_s = 3600
host_tag = "pi-emulated"
[[rules]]
topic = "hack/+device/+channel"
format = "seed_json"
"""


def compare(host: dict, arm: dict) -> tuple[float, list[str]]:
    """The largest difference between the arm64 and host forecasts, in output quanta, and what is missing."""
    worst, missing = 0.0, []
    for name in NAMES:
        h, a = host["models"][name], arm["models"].get(name)
        if a is None:
            missing.append(name)
            continue
        lsb = h.get("output_scale") or 1e-6
        for issue, fc in h["forecasts"].items():
            other = a["forecasts"].get(issue)
            if other is None or len(other["values"]) != len(fc["values"]) or other["complete"] != fc["complete"]:
                missing.append(f"{name}@{issue}")
                continue
            diff = max(abs(x - y) for x, y in zip(fc["values"], other["values"], strict=True)) / lsb
            worst = max(worst, diff)
    return worst, missing


def ingest_run(root: ArmRoot, broker, influxd, n: int, suite: str, problems: Problems) -> dict:
    """The agent inside the root takes n QoS 1 messages from a publisher on this host into influxd."""
    from tools.publish import Publisher, seed_message

    db = f"pi_{suite}"
    influxd.create_database(db)
    cfg = root.host_path(f"{INSIDE}/agent.toml")
    cfg.write_text(agent_config(f"{INSIDE}/state", broker.port, influxd.url, db, f"pi-{suite}"))
    logf = open(root.host_path(f"{INSIDE}/agent.out"), "wb")  # noqa: SIM115 - handed to the child
    t_start = time.monotonic()
    agent = root.popen(f"{VENV}/bin/edge-agent", "run", "--config", f"{INSIDE}/agent.toml", "--log-level", "INFO",
                       stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    out: dict = {"messages": n}
    try:
        connected = _wait(lambda: b"MQTT connected" in root.host_path(f"{INSIDE}/agent.out").read_bytes(), 120)
        out["agent_start_s"] = round(time.monotonic() - t_start, 1)
        if not problems.check(connected, f"{suite}: the agent in the root did not connect within 120 s"):
            return out
        t0 = time.monotonic()
        base = datetime(2024, 1, 1, tzinfo=UTC)
        pub = Publisher("127.0.0.1", broker.port, client_id=f"pi-pub-{suite}", max_inflight=100)
        pub.publish_all((seed_message("meter-1", "energy", "EnergyMeter", base + timedelta(seconds=i),
                                      {"EnergyIn": float(i)}) for i in range(n)), timeout=300)
        pub.close()
        done = _wait(lambda: _count(influxd, db)[0] >= n, 300)
        out["seconds"] = round(time.monotonic() - t0, 1)
        time.sleep(2.0)  # anything beyond n (a duplicate) would show now
        stored, distinct = _count(influxd, db)
        out.update(stored=stored, distinct_values=distinct, msgs_per_s_emulated=round(n / out["seconds"], 1))
        problems.check(done and stored == n and distinct == n,
                       f"{suite}: ingest stored {stored} points ({distinct} distinct values) of {n} messages")
    finally:
        agent.terminate()
        try:
            rc = agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
            rc = agent.wait()
        out["exit_code"] = rc
    problems.check(rc == 0, f"{suite}: the agent exited {rc} on SIGTERM: "
                            f"{root.host_path(f'{INSIDE}/agent.out').read_text(errors='replace')[-1500:]}")
    return out


def _count(influxd, db: str) -> tuple[int, int]:
    res = influxd.query('SELECT count("EnergyIn"), count(distinct("EnergyIn")) FROM "EnergyMeter"', db=db)
    res = res["results"][0]
    if "series" not in res:
        return 0, 0
    values = res["series"][0]["values"][0]
    return values[1], values[2]


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


GUARD_PROBE = """
import json, sys
from pathlib import Path
from shared.interpreter import runtime
rt = runtime("tflite-runtime")
print(json.dumps({Path(f).stem: rt.known_crash(Path(f).read_bytes()) is not None for f in sys.argv[1:]}))
"""


def tflite_runtime_probe(root: ArmRoot, wheel: Path, bundles: Path, ops_dir: Path, host_fc: dict) -> dict:
    """tflite-runtime 2.14 (numpy < 2) in its own venv: every bundle and single-op model, with and without
    XNNPACK, each in its own process; then, with the package installed there (no extras: no ai-edge-litert), the
    four bundles through the agent's inference code with tflite-runtime, and which single-op models the agent's
    guard (`Runtime.known_crash`) refuses."""
    t = time.monotonic()
    py = f"{INSIDE}/venv-tflite/bin/python"
    root.run("python3", "-m", "venv", f"{INSIDE}/venv-tflite")
    root.run(f"{INSIDE}/venv-tflite/bin/pip", "install", "-q", "--only-binary=:all:", "tflite-runtime==2.14.0",
             "numpy<2", f"{INSIDE}/{wheel.name}", timeout=1800)
    install_s = time.monotonic() - t
    files = [f"{INSIDE}/bundles/{n}/model.tflite" for n in NAMES]
    files += [f"{INSIDE}/ops/{p.name}" for p in sorted(ops_dir.glob("*.tflite"))]
    shutil.copytree(ops_dir, root.host_path(f"{INSIDE}/ops"))
    out: dict = {"install_s": round(install_s, 1), "ops": json.loads((ops_dir / "index.json").read_text())}
    for label, flag in (("xnnpack", []), ("builtin", ["--no-xnnpack"])):
        r = root.run(f"{INSIDE}/venv-tflite/bin/python", f"{INSIDE}/probe.py", "tflite_runtime.interpreter", *files,
                     *flag, timeout=1800)
        doc = json.loads(r.stdout.strip().splitlines()[-1])
        out[label] = {Path(k).parent.name if k.endswith("/model.tflite") else Path(k).stem: v["status"]
                      for k, v in doc.items()}
    r = root.run(py, f"{INSIDE}/inside.py", "forecast", "--bundles", f"{INSIDE}/bundles", "--csv",
                 f"{INSIDE}/raw_data.csv", "--runs", "0", "--interpreter", "tflite-runtime",
                 *[a for i in ISSUES for a in ("--issue", i)], check=False, timeout=900)
    if r.returncode == 0:
        arm = json.loads(r.stdout.strip().splitlines()[-1])
        worst, missing = compare(host_fc, arm)
        out["agent_forecast"] = {"interpreter": arm["interpreter"], "max_diff_vs_host_lsb": round(worst, 2),
                                 "missing": missing}
    else:
        out["agent_forecast"] = {"exit_code": r.returncode, "detail": r.stderr.strip().splitlines()[-3:]}
    r = root.run(py, "-c", GUARD_PROBE, *(f"{INSIDE}/ops/{p.name}" for p in sorted(ops_dir.glob("*.tflite"))))
    out["refused_by_guard"] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def check_suite(suite: str, work: Path, wheel: Path, bundles: Path, host_fc: dict, services, n_messages: int,
                ops_dir: Path | None) -> tuple[dict, Problems]:
    problems = Problems()
    result: dict = {"suite": suite}
    broker, influxd = services
    t_all = time.monotonic()
    with ArmRoot(suite, work / f"root-{suite}") as root:
        result["unpack_s"] = round(root.unpack_s, 1)
        (root.host_path(INSIDE)).mkdir(parents=True)
        shutil.copy(wheel, root.host_path(f"{INSIDE}/{wheel.name}"))
        shutil.copytree(bundles, root.host_path(f"{INSIDE}/bundles"), ignore=shutil.ignore_patterns("float"))
        shutil.copy(CSV, root.host_path(f"{INSIDE}/raw_data.csv"))
        for f in ("inside.py", "probe.py"):
            shutil.copy(Path(__file__).with_name(f), root.host_path(f"{INSIDE}/{f}"))
        r = root.run("python3", "-c", "import platform; print(platform.machine(), platform.python_version())")
        machine, python = r.stdout.split()
        result.update(machine=machine, python=python)
        problems.check(machine == "aarch64", f"{suite}: the root's python runs as {machine}, not aarch64")

        log(f"[{suite}] venv + pip install --only-binary=:all: {wheel.name}[edge] …")
        t = time.monotonic()
        root.run("python3", "-m", "venv", VENV)
        root.run(f"{VENV}/bin/pip", "install", "-q", "--only-binary=:all:", f"{INSIDE}/{wheel.name}[edge]",
                 timeout=1800)
        result["pip_install_s"] = round(time.monotonic() - t, 1)
        freeze = root.run(f"{VENV}/bin/pip", "list", "--format=json").stdout
        wheels = {d["name"]: d["version"] for d in json.loads(freeze)}
        result["wheels"] = {k: v for k, v in sorted(wheels.items()) if k not in ("pip", "setuptools")}
        problems.check(not any(k.lower().startswith(("tensorflow", "tf-", "tf_", "keras")) for k in wheels),
                       f"{suite}: TensorFlow/Keras in the edge venv: {sorted(wheels)}")

        log(f"[{suite}] edge-agent check …")
        (root.host_path(f"{INSIDE}/check.toml")).write_text(
            agent_config(f"{INSIDE}/state-check", broker.port, influxd.url, "pi_check", f"pi-check-{suite}"))
        t = time.monotonic()
        r = root.run(f"{VENV}/bin/edge-agent", "check", "--config", f"{INSIDE}/check.toml", check=False, timeout=300)
        result["check"] = {"exit_code": r.returncode, "seconds": round(time.monotonic() - t, 1),
                           "output": (r.stdout + r.stderr).strip().splitlines()[-2:]}
        problems.check(r.returncode == 0 and "connectivity OK" in r.stdout,
                       f"{suite}: edge-agent check failed ({r.returncode}): {r.stdout} {r.stderr[-1500:]}")
        bad = root.host_path(f"{INSIDE}/bad.toml")
        bad.write_text(agent_config(f"{INSIDE}/state-check", broker.port, influxd.url, "pi_check", "x")
                       .replace("reconnect_max_s = 2", "reconnect_max_s = 2\nqos = 5"))
        r = root.run(f"{VENV}/bin/edge-agent", "check", "--offline", "--config", f"{INSIDE}/bad.toml", check=False)
        problems.check(r.returncode == 2 and "[mqtt].qos" in r.stderr,
                       f"{suite}: a bad config passed the check ({r.returncode}): {r.stderr[-500:]}")

        log(f"[{suite}] four bundles through the agent's inference code …")
        args = [f"{VENV}/bin/python", f"{INSIDE}/inside.py", "forecast", "--bundles", f"{INSIDE}/bundles", "--csv",
                f"{INSIDE}/raw_data.csv", "--runs", "20"] + [a for i in ISSUES for a in ("--issue", i)]
        r = root.run(*args, check=False, timeout=900)
        if problems.check(r.returncode == 0, f"{suite}: the forecasts failed ({r.returncode}): {r.stderr[-2000:]}"):
            arm = json.loads(r.stdout.strip().splitlines()[-1])
            worst, missing = compare(host_fc, arm)
            result["interpreter"] = arm["interpreter"]
            result["forecast"] = {"models": {n: {"run_us_median_emulated": m.get("run_us_median"),
                                                 "load_ms_emulated": m["load_ms"]} for n, m in arm["models"].items()},
                                  "issues": len(ISSUES), "max_diff_vs_host_lsb": round(worst, 2),
                                  "seconds_emulated": arm["seconds"]}
            problems.check(not missing, f"{suite}: forecasts missing or different in shape: {missing}")
            problems.check(worst <= MAX_LSB, f"{suite}: arm64 forecasts differ from the host's by {worst:.2f} LSB")
            problems.check(arm["interpreter"]["name"] == "ai-edge-litert",
                           f"{suite}: the agent picked {arm['interpreter']}, not ai-edge-litert")

        log(f"[{suite}] ingest: {n_messages} messages through the agent in the root …")
        result["ingest"] = ingest_run(root, broker, influxd, n_messages, suite, problems)

        if ops_dir is not None and suite == "bookworm":
            log(f"[{suite}] tflite-runtime 2.14 probe …")
            try:
                result["tflite_runtime"] = tflite_runtime_probe(root, wheel, bundles, ops_dir, host_fc)
            except RuntimeError as exc:
                problems.check(False, f"{suite}: tflite-runtime probe failed: {exc}")
    result["seconds"] = round(time.monotonic() - t_all, 1)
    return result, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", default="bookworm,trixie")
    ap.add_argument("--bundles", type=Path, help="DIR/<name>/{manifest.json,model.tflite}; default: quick-trained")
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--no-tflite-runtime", action="store_true", help="skip the tflite-runtime probe (bookworm)")
    args = ap.parse_args()
    suites = [s for s in args.suites.split(",") if s]
    try:
        unknown = set(suites) - set(roots.SUITES)
        if unknown:
            raise PiSetupError(f"unknown suite(s) {sorted(unknown)}: choose from {sorted(roots.SUITES)}")
        qemu = roots.ensure_binfmt()
    except PiSetupError as exc:
        print(f"test-pi: {exc}", file=sys.stderr)
        return 2
    from tools.pi.inside import forecasts
    from tools.services import Influxd, Mosquitto

    t_all = time.monotonic()
    summary: dict = {"qemu": qemu, "qemu_cpu": roots.QEMU_CPU, "suites": {}, "root_build_s": {}}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="test-pi-") as tmp_s:
        work = Path(tmp_s)
        for suite in suites:
            _, seconds, cached = roots.build_cached(suite)
            summary["root_build_s"][suite] = "cached" if cached else round(seconds, 1)
        wheel = build_wheel(work / "wheel")
        bundles = args.bundles or quick_bundles(work / "bundles")
        ops_dir = None
        if not args.no_tflite_runtime and "bookworm" in suites:
            ops_dir = work / "ops"
            subprocess.run([sys.executable, "-m", "tools.pi.single_ops", str(ops_dir)], cwd=ROOT, check=True,
                           capture_output=True)
        host_fc = forecasts(bundles, CSV, list(ISSUES), runs=0)
        summary["host_interpreter"] = host_fc["interpreter"]
        with Mosquitto(work / "mq") as broker, Influxd(work / "db") as influxd:
            influxd.create_database("pi_check")
            for suite in suites:
                result, suite_problems = check_suite(suite, work, wheel, bundles, host_fc, (broker, influxd),
                                                     args.messages, ops_dir)
                summary["suites"][suite] = result
                problems += suite_problems
    summary["seconds"] = round(time.monotonic() - t_all, 1)
    summary["problems"] = problems
    print(json.dumps(summary))
    return 1 if problems else 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
