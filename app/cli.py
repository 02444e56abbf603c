"""`flask` commands: migrate the schema, (re)load the seed."""
import click

import fixtures
from models import schema
from models.base import release_connections


def prepare_mock_database():
    """Mock mode: migrate, then load the seed into an empty database."""
    schema.migrate()
    if fixtures.is_empty():
        fixtures.load_seed()
    release_connections()


def init_app(app):
    @app.cli.command("migrate")
    def migrate_command():
        """Apply pending schema migrations (a no-op when up to date)."""
        applied = schema.migrate()
        click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")

    @app.cli.command("seed")
    @click.option("--reset", is_flag=True, help="Delete every row first, then load the seed.")
    def seed_command(reset):
        """Load the mock-mode seed (spec §9): two workspaces, 87 + 12 issues."""
        schema.migrate()
        if not reset and not fixtures.is_empty():
            raise click.ClickException("the database already has data; use --reset to replace it")
        counts = fixtures.load_seed(reset=reset)
        click.echo(f"seeded {counts['workspaces']} workspaces and {counts['issues']} issues")
