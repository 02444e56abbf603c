"""Patterns count their linked issues per severity, so detection's risk score reads four
counters instead of every linked issue (the counts are filled from the issues here)."""

# Issue.severity stores a rank: low 0, medium 1, high 2, critical 3.
COUNTERS = {"linked_low": 0, "linked_medium": 1, "linked_high": 2, "linked_critical": 3}


def up(migrator, db):
    # Plain ADD COLUMN: the migrator's NOT NULL step rebuilds the table on SQLite, which would
    # drop the triggers that keep the pattern search index.
    for name in COUNTERS:
        db.execute_sql(f'ALTER TABLE "pattern" ADD COLUMN "{name}" INTEGER NOT NULL DEFAULT 0')
    counts = ", ".join(
        f'"{name}" = (SELECT COUNT(*) FROM issue WHERE issue.pattern_id = pattern.id AND issue.severity = {rank})'
        for name, rank in COUNTERS.items())
    db.execute_sql(f"UPDATE pattern SET {counts}")


def down(migrator, db):
    for name in COUNTERS:
        db.execute_sql(f'ALTER TABLE "pattern" DROP COLUMN "{name}"')
