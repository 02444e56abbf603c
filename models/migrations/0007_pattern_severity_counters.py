"""Patterns count their linked issues per severity, so detection's risk score reads four
counters instead of every linked issue (the counts are filled from the issues here)."""
from peewee import IntegerField

# Issue.severity stores a rank: low 0, medium 1, high 2, critical 3.
COUNTERS = {"linked_low": 0, "linked_medium": 1, "linked_high": 2, "linked_critical": 3}


def up(migrator, db):
    migrator.migrate(*[migrator.add_column("pattern", name, IntegerField(default=0)) for name in COUNTERS])
    counts = ", ".join(
        f'{name} = (SELECT COUNT(*) FROM issue WHERE issue.pattern_id = pattern.id AND issue.severity = {rank})'
        for name, rank in COUNTERS.items())
    db.execute_sql(f"UPDATE pattern SET {counts}")


def down(migrator, db):
    migrator.migrate(*[migrator.drop_column("pattern", name) for name in COUNTERS])
