"""Workstation server: Flask app (gunicorn), history pull, training jobs, model registry, push to edges."""
