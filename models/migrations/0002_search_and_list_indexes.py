"""Full-text search over issues (SQLite FTS5 / PostgreSQL tsvector) and the list indexes."""
from peewee import PostgresqlDatabase

INDEXES = [
    ("issue_workspace_updated_at_id", "issue", "workspace_id, updated_at, id"),
    ("issue_workspace_severity_id", "issue", "workspace_id, severity, id"),
    ("issue_workspace_risk_score_id", "issue", "workspace_id, risk_score, id"),
    ("issue_pattern_created_at_id", "issue", "pattern_id, created_at, id"),
    ("pattern_workspace_issue_count_id", "pattern", "workspace_id, issue_count, id"),
    ("pattern_workspace_last_seen_at_id", "pattern", "workspace_id, last_seen_at, id"),
]

SQLITE_UP = [
    """CREATE VIRTUAL TABLE issue_fts USING fts5(
           title, description, content='issue', content_rowid='rowid',
           tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER issue_fts_insert AFTER INSERT ON issue BEGIN
           INSERT INTO issue_fts(rowid, title, description)
           VALUES (new.rowid, new.title, new.description);
       END""",
    """CREATE TRIGGER issue_fts_delete AFTER DELETE ON issue BEGIN
           INSERT INTO issue_fts(issue_fts, rowid, title, description)
           VALUES ('delete', old.rowid, old.title, old.description);
       END""",
    """CREATE TRIGGER issue_fts_update AFTER UPDATE OF title, description ON issue BEGIN
           INSERT INTO issue_fts(issue_fts, rowid, title, description)
           VALUES ('delete', old.rowid, old.title, old.description);
           INSERT INTO issue_fts(rowid, title, description)
           VALUES (new.rowid, new.title, new.description);
       END""",
    "INSERT INTO issue_fts(issue_fts) VALUES ('rebuild')",
]

POSTGRES_UP = [
    """ALTER TABLE issue ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
           setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
           setweight(to_tsvector('english', coalesce(description, '')), 'B')) STORED""",
    "CREATE INDEX issue_search_vector ON issue USING GIN (search_vector)",
    "CREATE INDEX pattern_name_search ON pattern USING GIN (to_tsvector('english', name))",
]

SQLITE_PATTERN_UP = [
    """CREATE VIRTUAL TABLE pattern_fts USING fts5(
           name, content='pattern', content_rowid='rowid',
           tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER pattern_fts_insert AFTER INSERT ON pattern BEGIN
           INSERT INTO pattern_fts(rowid, name) VALUES (new.rowid, new.name);
       END""",
    """CREATE TRIGGER pattern_fts_delete AFTER DELETE ON pattern BEGIN
           INSERT INTO pattern_fts(pattern_fts, rowid, name) VALUES ('delete', old.rowid, old.name);
       END""",
    """CREATE TRIGGER pattern_fts_update AFTER UPDATE OF name ON pattern BEGIN
           INSERT INTO pattern_fts(pattern_fts, rowid, name) VALUES ('delete', old.rowid, old.name);
           INSERT INTO pattern_fts(rowid, name) VALUES (new.rowid, new.name);
       END""",
    "INSERT INTO pattern_fts(pattern_fts) VALUES ('rebuild')",
]


def up(migrator, db):
    db.execute_sql('DROP INDEX "issue_pattern_id_created_at"')  # superseded: id joins the key
    for name, table, columns in INDEXES:
        db.execute_sql(f'CREATE INDEX "{name}" ON "{table}" ({columns})')
    statements = POSTGRES_UP if isinstance(db, PostgresqlDatabase) else SQLITE_UP + SQLITE_PATTERN_UP
    for statement in statements:
        db.execute_sql(statement)


def down(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql("DROP INDEX pattern_name_search")
        db.execute_sql("ALTER TABLE issue DROP COLUMN search_vector")
    else:
        for trigger in ("insert", "delete", "update"):
            db.execute_sql(f"DROP TRIGGER issue_fts_{trigger}")
            db.execute_sql(f"DROP TRIGGER pattern_fts_{trigger}")
        db.execute_sql("DROP TABLE issue_fts")
        db.execute_sql("DROP TABLE pattern_fts")
    for name, _, _ in INDEXES:
        db.execute_sql(f'DROP INDEX "{name}"')
    db.execute_sql('CREATE INDEX "issue_pattern_id_created_at" ON "issue" (pattern_id, created_at)')
