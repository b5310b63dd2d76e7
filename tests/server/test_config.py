"""Server configuration: unknown keys and wrong types are refused with the key's name; the generated session key is
created once even when several processes start together."""

from __future__ import annotations

import multiprocessing
import stat

import pytest
from werkzeug.security import generate_password_hash

from server.config import ConfigError, load_config

HASH = generate_password_hash("pw")


def write(tmp_path, text: str):
    path = tmp_path / "server.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\nadmin_password_hash = "{HASH}"\n' + text)
    return path


def test_a_valid_file_loads(tmp_path):
    cfg = load_config(write(tmp_path, 'login_attempts = 3\nstatus_poll_s = 5\nsession_cookie_secure = false\n'
                                      'trusted_proxies = 1\ntraining_data_dirs = ["/srv/csv"]\n'))
    assert cfg.login_attempts == 3 and cfg.status_poll_s == 5.0 and isinstance(cfg.status_poll_s, float)
    assert cfg.session_cookie_secure is False and cfg.trusted_proxies == 1
    assert [str(p) for p in cfg.training_data_dirs] == ["/srv/csv"]


@pytest.mark.parametrize("text, key", [
    ("login_attemps = 3\n", "login_attemps"),                 # a typo is not silently ignored
    ("[server]\nport = 1\n", "server"),
    ('login_attempts = "5"\n', "login_attempts"),
    ("login_attempts = true\n", "login_attempts"),
    ("login_attempts = 1.5\n", "login_attempts"),
    ('status_poll_s = "60"\n', "status_poll_s"),
    ('session_cookie_secure = "false"\n', "session_cookie_secure"),
    ("session_cookie_secure = 0\n", "session_cookie_secure"),
    ("training_epochs = 0\n", "training_epochs"),
    ("login_window_s = -1\n", "login_window_s"),
    ("trusted_proxies = -1\n", "trusted_proxies"),
    ('training_data_dirs = "/srv"\n', "training_data_dirs"),
    ("training_data_dirs = [1]\n", "training_data_dirs"),
    ("admin_user = 1\n", "admin_user"),
    ("python = []\n", "python"),
    ("api_token = 12345678901234567890\n", "api_token"),
    ('api_token = "short"\n', "api_token"),
    ('[jobs]\nray_address = "head"\n', "[jobs].ray_address must be host:port"),  # the tables: the same validator
    ("[jobs]\ncpus = 2\n", "[jobs]: unknown key(s) cpus"),
    ("[jobs]\ncpus_per_job = 0\n", "[jobs].cpus_per_job must be > 0"),
    ("[notify]\nstale_after_s = 0\n", "[notify].stale_after_s must be > 0"),
    ('[notify]\nurls = ["ntfy://x", ""]\n', "[notify].urls must be a list of apprise URLs"),
    ("jobs = 1\n", "[jobs] must be a table"),
])
def test_unknown_keys_and_wrong_types_name_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value) and str(path) in str(err.value)  # and the file: there may be several


def test_the_other_errors_name_the_file_too(tmp_path):
    """The secrets' and data_dir's errors named only the key; an installer with several configs needs the file."""
    (tmp_path / "a-file").write_text("")
    cases = [(f'data_dir = "{tmp_path / "a-file" / "d"}"\nadmin_password_hash = "{HASH}"\n', "data_dir: cannot create"),
             (f'data_dir = "{tmp_path / "data"}"\n', "admin_password_hash is required"),
             (f'data_dir = "{tmp_path / "data"}"\nadmin_password_hash = "{HASH}"\nsecret_key = "short"\n',
              "secret_key must have at least 16"),
             (f'data_dir = "{tmp_path / "data"}"\nadmin_password_hash_file = "missing"\n',
              "admin_password_hash_file: cannot read")]
    for text, message in cases:
        path = tmp_path / "server.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert message in str(err.value) and f"server config {path}" in str(err.value), err.value


def test_unknown_override_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="login_attemps"):
        load_config(None, data_dir=str(tmp_path / "d"), admin_password_hash=HASH, login_attemps=3)


def _load(args):
    path, barrier = args
    barrier.wait()
    return load_config(path).secret_key


def test_the_generated_session_key_is_created_once_by_parallel_starts(tmp_path):
    path = write(tmp_path, "")
    # spawn, not fork: forking a test process whose other threads hold locks can deadlock the children
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as m:
        barrier = m.Barrier(8)
        with ctx.Pool(8) as pool:
            keys = pool.map(_load, [(path, barrier)] * 8)
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert stat.S_IMODE((tmp_path / "data" / "secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


# -- secrets: one rule for agent and server (shared/secrets.py): <key>_file, then <key>_env, then <key> -------------
FILE_TOKEN, ENV_TOKEN, NAMED_ENV_TOKEN, VALUE_TOKEN = ("from-the-file-0123456789", "from-server-env-0123456789",
                                                       "from-named-env-0123456789", "from-the-value-0123456789")


def test_a_secret_file_wins_over_the_environment_and_the_value(tmp_path, monkeypatch):
    """The order the agent uses too; the server used to prefer SERVER_<KEY> over a configured file."""
    (tmp_path / "api-token").write_text(FILE_TOKEN + "\n")
    monkeypatch.setenv("SERVER_API_TOKEN", ENV_TOKEN)
    cfg = load_config(write(tmp_path, f'api_token_file = "api-token"\napi_token = "{VALUE_TOKEN}"\n'))
    assert cfg.api_token == FILE_TOKEN  # relative to the config file's directory, stripped


def test_the_environment_wins_over_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVER_API_TOKEN", ENV_TOKEN)  # the default <key>_env: what docker-compose sets
    assert load_config(write(tmp_path, f'api_token = "{VALUE_TOKEN}"\n')).api_token == ENV_TOKEN
    monkeypatch.setenv("MY_TOKEN", NAMED_ENV_TOKEN)  # a named variable replaces the default one
    cfg = load_config(write(tmp_path, f'api_token_env = "MY_TOKEN"\napi_token = "{VALUE_TOKEN}"\n'))
    assert cfg.api_token == NAMED_ENV_TOKEN
    monkeypatch.delenv("MY_TOKEN")
    cfg = load_config(write(tmp_path, f'api_token_env = "MY_TOKEN"\napi_token = "{VALUE_TOKEN}"\n'))
    assert cfg.api_token == VALUE_TOKEN  # an unset variable falls through to the value


def test_an_unreadable_secret_file_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVER_API_TOKEN", ENV_TOKEN)  # no silent fallback to the next source
    with pytest.raises(ConfigError, match="api_token_file"):
        load_config(write(tmp_path, 'api_token_file = "missing"\n'))


def test_the_docs_name_every_key_and_no_other():
    """docs/server.md "Configuration": the top-level keys' table, the [jobs] table and the [notify] paragraph against
    the dataclasses (a new setting is documented, a removed one leaves the docs)."""
    import dataclasses
    import re
    from pathlib import Path

    from server.config import JobsConfig, NotifyConfig, ServerConfig

    text = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text()
    part = text[text.index("## Configuration (TOML"):text.index("## Code layout")]
    top, jobs, notify = (part[:part.index("`[jobs]`")], part[part.index("`[jobs]`"):part.index("`[notify]`")],
                         part[part.index("`[notify]`"):])

    def first_cells(s: str) -> set[str]:
        return {k for line in s.splitlines() if line.startswith("| `")
                for k in re.findall(r"`([a-z_]+)`", line.split("|")[1])}

    for documented, cls, tables in ((first_cells(top), ServerConfig, {"jobs", "notify"}),
                                    (first_cells(jobs), JobsConfig, set()),
                                    (set(re.findall(r"`([a-z_]+)`", notify)), NotifyConfig, set())):
        assert documented == {f.name for f in dataclasses.fields(cls)} - tables, cls.__name__
