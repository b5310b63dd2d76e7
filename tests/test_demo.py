"""The demo (tools/demo.py) without its trainings: why the real year's 34,023 readings become 68,044 MQTT messages
(each sent as two, around it, never on a slot end; the first and the last once), the login at once, the agent's
token file, the verdict lines and the JSON summary on real services."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.schema import BUNDLE_NAMES, SLOT_NS
from shared.series import read_csv
from tools.demo import CSV, JITTER_S, jittered

ROOT = Path(__file__).resolve().parents[1]


def test_each_reading_becomes_two_messages_around_it_never_on_a_slot_end():
    rows = read_csv(CSV)
    times, values = [int(t) for t in rows.times], rows.values.tolist()
    out = jittered(times, values)
    assert (len(times), len(out)) == (34_023, 68_044)  # 2 × 34,023 − 2: the first and the last once
    ns = [int(t.timestamp() * 1e9) for t, _ in out]
    assert not [t for t in ns if t % SLOT_NS == 0]
    gaps = sorted({round(abs(a - b) / 1e9) for a, b in zip(ns[1::2], times[1:], strict=False)})
    assert JITTER_S[0] - 1 <= gaps[0] and gaps[-1] <= JITTER_S[1] + 1


@pytest.mark.timeout(300)
def test_the_login_comes_at_once_the_token_file_works_and_the_summary_has_both_trainings(tmp_path, seed_bundles,
                                                                                         capsys):
    """The demo's stages around the trainings, on real services (no training here: the session's quick bundles
    stand in for the quick and the full run): the login printed and in login.txt as soon as the server runs, the
    agent's token file taken by `edge-agent models`, one line per model in words, and the JSON summary."""
    from server.config import load_config
    from server.registry import node_owner
    from server.state import build_state
    from shared.points import Point
    from tools.demo import Demo, FirstForecast, Replay, api, start_services, summarise, verdict_lines

    d = Demo(tmp_path / "demo", epochs=1)
    d.tmp.mkdir()
    try:
        start_services(d)
        err = capsys.readouterr().err
        assert f"watch the training at {d.server.url}/nodes/{d.node_id}" in err and d.password in err
        assert d.password in d.login_file.read_text() and d.login_file.stat().st_mode & 0o777 == 0o600
        assert d.token_file.stat().st_mode & 0o777 == 0o600
        cli = subprocess.run([sys.executable, "-m", "edge_agent", "models", "--url", f"http://127.0.0.1:{d.api_port}",
                              "--token-file", str(d.token_file), "status", "--json"], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
        assert cli.returncode == 0 and "models" in json.loads(cli.stdout), cli.stderr
        assert f"--token-file {d.token_file} status" in err  # the command the demo prints is that one
        # first_model_forecast_s: when the first int8 model's forecast is in the database (a baseline's is not)
        t0 = time.time()
        first = FirstForecast(d, t0)
        first.start()
        base = {"version": "v", "horizon": "1", "name": "cnn-1", "issue": "rolling"}
        line = lambda model: Point("forecast", base | {"model": model}, {"value_kwh": 0.1},  # noqa: E731
                                   time.time_ns()).to_line().encode()
        assert d.db.write_raw("energy", line("baseline")) == 204
        time.sleep(1)
        assert not first.found.is_set()
        assert d.db.write_raw("energy", line("cnn")) == 204
        seconds = first.wait(30)
        assert seconds is not None and 1 <= seconds <= time.time() - t0 + 0.1

        s = build_state(load_config(d.server.config))
        runs = [s.registry.add_run([seed_bundles / n for n in BUNDLE_NAMES], node_owner(d.node_id))
                for _ in ("quick", "full")]
        quick, full = ({"versions": {r["name"]: r["version"] for r in run}} for run in runs)
        r = api(d.server.url, d.api_token, f"/api/v1/nodes/{d.node_id}/push",
                {"version": full["versions"]["cnn-1"], "override": True})
        full["pushes"] = r["results"]
        lines = verdict_lines(d, full)
        assert [line.split(" (")[0] for line in lines] == ["next 15 min", "next 15 min", "day ahead", "day ahead"]
        assert all(re.search(r": (\d+ % (better|worse) than|about the same as) the ", line) for line in lines), lines
        now = time.time_ns() // SLOT_NS * SLOT_NS
        summary = summarise(d, Replay([now - SLOT_NS, now], [1.0, 1.1], now, sent=2, ingested=2), quick, full,
                            61.5, time.time() - 100)
        assert summary["first_model_forecast_s"] == 61.5 and summary["pushed"] and summary["full_replaced_quick"]
        assert set(summary["trained"]) == set(BUNDLE_NAMES) and summary["lost"] == 0
        assert summary["active_versions"] == full["versions"]
        json.dumps(summary)
    finally:
        d.stop()
