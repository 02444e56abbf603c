"""An index of the issues waiting for a pattern (unlinked, represented, not pinned), newest
first: similarity placement reads a workspace's 500 most recent of them on every write, which
without it walked the workspace's issues until it found them (70 ms a write at 200,000 issues,
most of them linked)."""

WAITING = 'pattern_id IS NULL AND embedding IS NOT NULL AND NOT pinned'  # as Index() asks (similarity.py)


def up(migrator, db):
    db.execute_sql(f'CREATE INDEX "issue_waiting" ON "issue" (workspace_id, created_at, id) WHERE {WAITING}')


def down(migrator, db):
    db.execute_sql('DROP INDEX "issue_waiting"')
