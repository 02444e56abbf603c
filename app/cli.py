"""`flask` commands: migrate the schema, (re)load the seed, generate synthetic data."""
import click

import fixtures
from fixtures import synthetic
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

    @app.cli.command("generate")
    @click.option("--workspace", required=True, help="Workspace id; created (with an owner) if missing.")
    @click.option("--issues", type=click.IntRange(min=0), default=1000, show_default=True)
    @click.option("--patterns", type=click.IntRange(min=0), default=30, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True, help="Seed of the random generator.")
    def generate_command(workspace, issues, patterns, seed):
        """Fill an empty workspace with realistic synthetic issues and patterns (no events)."""
        schema.migrate()
        try:
            made = synthetic.generate(workspace, issues, patterns, seed=seed)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"workspace: {made['workspace_id']}")
        click.echo(f"owner: {made['owner_id']}")
        click.echo(f"generated {made['issues']} issues and {made['patterns']} patterns "
                   f"in {made['seconds']:.1f} s")
