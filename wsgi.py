"""The WSGI entry point for gunicorn (see the Procfile)."""
from app import create_app

app = create_app()
