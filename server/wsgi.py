"""WSGI entry point for gunicorn: `gunicorn -c server/gunicorn.conf.py server.wsgi:app`."""

from server import create_app

app = create_app()
