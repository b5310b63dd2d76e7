"""The web process stays light: gunicorn's workers import `server.wsgi`, which must not load TensorFlow or the
training code (hundreds of MB and seconds per worker). Only the job worker's trainings need them."""

from __future__ import annotations

import subprocess
import sys

from werkzeug.security import generate_password_hash

from tests.conftest import ROOT
from tests.helpers.server import API_TOKEN, PASSWORD

HEAVY = ("tensorflow", "tf_keras", "keras", "training.train", "training.fit", "training.models", "training.export")


def test_the_web_app_loads_neither_tensorflow_nor_the_training_code(tmp_path):
    """Import the app as gunicorn does (server.wsgi with $SERVER_CONFIG), then serve the pages and the API that
    show the seed reference: none of HEAVY is in sys.modules."""
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nadmin_password_hash = "{generate_password_hash(PASSWORD)}"\n'
                      f'api_token = "{API_TOKEN}"\nsession_cookie_secure = false\nstatus_poll_s = 3600\n')
    code = f"""
import sys
from server.wsgi import app
from tests.helpers.server import csrf_of
c = app.test_client()
csrf = csrf_of(c.get('/login').get_data(as_text=True))
assert c.post('/login', data={{'username': 'admin', 'password': {PASSWORD!r}, 'csrf_token': csrf}}).status_code == 302
assert c.get('/').status_code == 200
assert c.get('/api/v1/models', headers={{'Authorization': 'Bearer {API_TOKEN}'}}).status_code == 200
print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras') or m in {HEAVY!r}))
"""
    env = {"SERVER_CONFIG": str(config), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
