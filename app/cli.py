"""`flask` commands: migrate the schema, (re)load the seed, provision a real deployment's first
owner, regroup, prune expired data, recompute predictions, generate synthetic data."""
import time

import click

import fixtures
from fixtures import synthetic
from models import db, provision_owner, schema
from models.base import release_connections

from . import tasks


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

    @app.cli.command("worker")
    def worker_command():
        """Run the task worker: webhook fan-out, delivery and retries (Huey's consumer)."""
        tasks.run_worker(app)

    @app.cli.command("seed")
    @click.option("--reset", is_flag=True, help="Delete every row first, then load the seed.")
    def seed_command(reset):
        """Load the mock-mode seed (spec §9): two workspaces, 87 + 12 issues."""
        schema.migrate()
        if not reset and not fixtures.is_empty():
            raise click.ClickException("the database already has data; use --reset to replace it")
        counts = fixtures.load_seed(reset=reset)
        click.echo(f"seeded {counts['workspaces']} workspaces and {counts['issues']} issues")

    @app.cli.command("provision")
    @click.option("--org", "org_name", required=True, help="Organization name.")
    @click.option("--clerk-org-id", default=None, help="The Clerk organization it is (org_...).")
    @click.option("--workspace", "workspace_name", default=None,
                  help="Workspace name (default: the organization's name).")
    @click.option("--clerk-user-id", required=True, help="The owner's Clerk user id (user_...).")
    @click.option("--email", required=True, help="The owner's email address.")
    @click.option("--name", "user_name", default=None, help="The owner's display name.")
    def provision_command(org_name, clerk_org_id, workspace_name, clerk_user_id, email, user_name):
        """Create (or find) an organization, a workspace and its owner, so they can sign in with Clerk."""
        schema.migrate()
        with db.connection_context():
            rows = provision_owner(org_name, workspace_name or org_name, clerk_user_id, email,
                                   clerk_org_id=clerk_org_id, user_name=user_name)
        for kind, (row_id, state) in rows.items():
            click.echo(f"{kind}: {row_id} ({state})")

    @app.cli.command("prune")
    @click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000),
                  help="Most rows deleted per transaction (fewer while a transaction takes over 50 ms).")
    def prune_command(batch_size):
        """Delete what each workspace's data retention says has expired (issues, ended sign-in
        sessions, audit entries), in short transactions; pattern counters stay exact. Prints
        what it deleted and how long its transactions held their locks."""
        from models import retention

        schema.migrate()
        timings = []
        with db.connection_context():
            done = retention.prune(batch=batch_size, timings=timings)
        for workspace_id, counts in done.items():
            click.echo(f"{workspace_id}: " + ", ".join(f"{count} {kind}" for kind, count in counts.items()))
        if timings:
            ms = sorted(seconds * 1000 for seconds in timings)
            click.echo(f"{len(ms)} transactions held their locks p50 {ms[len(ms) // 2]:.0f} ms, "
                       f"p99 {ms[(len(ms) - 1) * 99 // 100]:.0f} ms, longest {ms[-1]:.0f} ms")

    @app.cli.command("regroup")
    @click.option("--workspace", required=True, help="Workspace id.")
    @click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
    def regroup_command(workspace, dry_run):
        """Re-place a workspace's unpinned issues by similarity and merge patterns that now read
        alike (never pinned issues, never a split pair). Prints every move and merge. Applying
        first embeds issues stored without a representation (before similarity grouping)."""
        from models.grouping import corrections

        schema.migrate()
        with db.connection_context():
            if not dry_run:
                embedded = corrections.backfill(workspace)
                if embedded:
                    click.echo(f"embedded {embedded} issues stored without a representation")
            plan = corrections.regroup(workspace, apply=not dry_run)
        for issue_id, before, after in plan["moves"]:
            click.echo(f"move {issue_id}: {before or '(none)'} -> {after or '(none)'}")
        for source, target, score in plan["merges"]:
            click.echo(f"merge {source} into {target} (score {score})")
        verb = "would make" if dry_run else "made"
        click.echo(f"{verb} {len(plan['moves'])} moves and {len(plan['merges'])} merges")

    @app.cli.group("predictions")
    def predictions_group():
        """Recurrence predictions (models/predictions.py)."""

    @predictions_group.command("recompute")
    def predictions_recompute_command():
        """Recompute every workspace's predictions (the worker schedules this)."""
        from models import predictions

        schema.migrate()
        started = time.perf_counter()
        changed = predictions.recompute_all()
        for workspace_id, rows in changed.items():
            click.echo(f"{workspace_id}: {rows} predictions changed")
        click.echo(f"recomputed {len(changed)} workspaces in {time.perf_counter() - started:.1f} s")

    @app.cli.command("generate")
    @click.option("--workspace", required=True, help="Workspace id; created (with an owner) if missing.")
    @click.option("--issues", type=click.IntRange(min=0), default=1000, show_default=True)
    @click.option("--patterns", type=click.IntRange(min=0), default=30, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True, help="Seed of the random generator.")
    @click.option("--rates", is_flag=True, help="Patterns recur at known rates (half Poisson, half bursty); "
                                                "every issue belongs to one; each pattern's rate is printed.")
    def generate_command(workspace, issues, patterns, seed, rates):
        """Fill an empty workspace with realistic synthetic issues and patterns (no events)."""
        schema.migrate()
        try:
            made = synthetic.generate(workspace, issues, patterns, seed=seed, rates=rates)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"workspace: {made['workspace_id']}")
        click.echo(f"owner: {made['owner_id']}")
        click.echo(f"generated {made['issues']} issues and {made['patterns']} patterns "
                   f"in {made['seconds']:.1f} s")
        for pattern_id, (kind, rate, size) in made.get("rates", {}).items():
            click.echo(f"rate {pattern_id}: {kind} {rate:.4f} episodes/day, {size:g} issues per episode")
