"""WSGI entry point for gunicorn: ``gunicorn taskrank.server.wsgi:app``."""

from taskrank.server import create_app

app = create_app()
