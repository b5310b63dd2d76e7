"""Every kind of bad input is rejected, counted per reason and dead-lettered; the agent keeps running."""

import base64
import json
from datetime import UTC, datetime

from tests.helpers.agent import count, start_agent, wait_for, write_config
from tools.publish import Publisher, seed_message

T = datetime(2023, 3, 1, 12, 0, tzinfo=UTC)

BAD = [
    ("hack/m1/e", b"\xff\xfe\x00binary", "not_utf8"),
    ("hack/m1/e", b"{not json", "not_json"),
    ("hack/m1/e", json.dumps({"FeatureType": "EnergyMeter", "Power": "high"}).encode(), "wrong_type"),
    ("hack/m1/e", b'{"FeatureType": "EnergyMeter", "Power": NaN}', "not_finite"),
    ("hack/m1/e", b'{"FeatureType": "EnergyMeter", "Power": Infinity}', "not_finite"),
    ("hack/m1/e", json.dumps({"device_id": "m1", "Power": 1.0}).encode(), "missing_field"),
    ("hack/m1/e", json.dumps({"FeatureType": "EnergyMeter", "device_id": "m1"}).encode(), "missing_field"),
    ("junk/whatever", b"1.0", "unknown_topic"),
    ("hack/m1/e", json.dumps({"FeatureType": "EnergyMeter", "Power": 1.0, "pad": "x" * 3000}).encode(), "too_large"),
    ("home/attic/temperature", b"warm", "wrong_type"),
    ("hack/m1/e", json.dumps({"FeatureType": "EnergyMeter", "Power": 1.0, "time": "yesterday"}).encode(),
     "bad_timestamp"),
]


def test_bad_inputs_are_dead_lettered_and_counted(tmp_path, mosquitto_session, influxd_session, influx_db_name):
    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, influx_db_name,
                       client_id=f"agent-{influx_db_name}")
    agent = start_agent(cfg)
    pub = Publisher("127.0.0.1", mosquitto_session.port, client_id=f"pub-{influx_db_name}")
    try:
        good = [seed_message("m1", "e", "EnergyMeter", T.replace(minute=i), {"Power": float(i)}) for i in range(3)]
        pub.publish_all(good[:1] + [(t, p) for t, p, _ in BAD] + good[1:])
        wait_for(lambda: agent.health.get("rejected") == len(BAD) and
                 count(influxd_session, influx_db_name, "EnergyMeter", "Power") == 3)
        # counted per reason
        expected: dict[str, int] = {}
        for _, _, reason in BAD:
            expected[reason] = expected.get(reason, 0) + 1
        for reason, n in expected.items():
            assert agent.health.get(f"rejected_{reason}") == n, reason
        # every reject in the dead-letter file with topic, payload, reason, time and rule
        lines = [json.loads(x) for x in (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()]
        assert sorted(d["reason"] for d in lines) == sorted(r for _, _, r in BAD)
        binary = next(d for d in lines if d["reason"] == "not_utf8")
        assert binary["payload_encoding"] == "base64"
        assert base64.b64decode(binary["payload"]) == BAD[0][1]
        nan = next(d for d in lines if d["reason"] == "not_finite")
        assert nan["topic"] == "hack/m1/e" and nan["rule"] == "hackathon" and "Power" in nan["detail"]
        assert all(d["time"].endswith("Z") for d in lines)
        assert next(d for d in lines if d["reason"] == "unknown_topic")["rule"] is None
        # still running: a later good message is stored
        pub.publish_all([seed_message("m1", "e", "EnergyMeter", T.replace(minute=30), {"Power": 30.0})])
        wait_for(lambda: count(influxd_session, influx_db_name, "EnergyMeter", "Power") == 4)
        # health counters reach the database as measurement `agent`
        wait_for(lambda: count(influxd_session, influx_db_name, "agent", "rejected") > 0, timeout=10)
    finally:
        pub.close()
        agent.stop()


def test_config_errors_are_clear(tmp_path):
    import subprocess
    import sys

    from tests.helpers.agent import ROOT

    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nport = "x"\n[[rules]]\ntopic = "a/+b"\nformat = "seed_json"\n')
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--offline", "--config", str(bad)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "[mqtt].port: expected int" in r.stderr
    bad.write_text('[[rules]]\ntopic = "a/#/b"\nformat = "seed_json"\n')
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--offline", "--config", str(bad)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "'#' must be the last level" in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--config", str(tmp_path / "missing.toml")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read config" in r.stderr


def test_check_reports_unreachable_services(tmp_path):
    import subprocess
    import sys

    from tests.helpers.agent import ROOT
    from tools.services import free_port

    cfg = write_config(tmp_path, free_port(), f"http://127.0.0.1:{free_port()}", "x")
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "database at" in r.stderr and "MQTT broker" in r.stderr and "unreachable" in r.stderr


def test_check_passes_against_real_services(tmp_path, mosquitto_session, influxd_session):
    import subprocess
    import sys

    from tests.helpers.agent import ROOT

    cfg = write_config(tmp_path, mosquitto_session.port, influxd_session.url, "x")
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "connectivity OK" in r.stdout
