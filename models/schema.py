"""Versioned schema migrations (peewee's playhouse.migrations), for SQLite and PostgreSQL alike."""
import os

from playhouse.migrations import Runner

from .base import db

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")


def runner(directory=MIGRATIONS_DIR):
    return Runner(db.obj, directory=directory)


def migrate(directory=MIGRATIONS_DIR):
    """Apply pending migrations in order; returns their names (empty when up to date)."""
    with db.connection_context():
        return runner(directory).up()


def pending(directory=MIGRATIONS_DIR):
    with db.connection_context():
        return [m.name for m in runner(directory).status() if not m.applied]
