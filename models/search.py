"""Word search (not substring scans): SQLite FTS5 or PostgreSQL tsvector, web-search syntax."""
import peewee as pw
from playhouse import fts_parser

from .base import db

# The PostgreSQL expression each searchable table is indexed on (see migration 0002).
POSTGRES_VECTORS = {
    "issue": pw.SQL("search_vector"),
    "pattern": pw.fn.to_tsvector("english", pw.SQL("name")),
}
SQLITE_COLUMNS = {"issue": ("title", "description"), "pattern": ("name",)}


def is_postgres():
    return isinstance(db.obj, pw.PostgresqlDatabase)


def matches(model, text):
    """A WHERE expression: rows of `model` whose indexed text matches the search `text`.

    Syntax as in a search box: words (all must match, stemmed), "quoted phrases", OR, -excluded.
    """
    table = model._meta.table_name
    if is_postgres():
        return pw.NodeList((POSTGRES_VECTORS[table], pw.SQL("@@"),
                            pw.fn.websearch_to_tsquery("english", text)))
    query = fts_parser.parse(text, columns=SQLITE_COLUMNS[table])
    if not query:
        return pw.SQL("0 = 1")
    return pw.SQL(f"rowid IN (SELECT rowid FROM {table}_fts WHERE {table}_fts MATCH ?)", [query])
