"""Word search (not substring scans): SQLite FTS5 or PostgreSQL tsvector, web-search syntax."""
import peewee as pw
from playhouse import fts_parser

from .base import db, is_postgres

# The PostgreSQL expression each searchable table is indexed on (see migration 0002).
POSTGRES_VECTORS = {
    "issue": pw.SQL("search_vector"),
    "pattern": pw.fn.to_tsvector("english", pw.SQL("name")),
}
SQLITE_COLUMNS = {"issue": ("title", "description"), "pattern": ("name",)}


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
    return WordMatch(table, query)


class WordMatch(pw.ColumnBase):
    """SQLite's `rowid IN (rows of the FTS5 index matching the query)`; first_rows() may
    narrow it to a rowid range, or set it aside, while it plans a page."""

    def __init__(self, table, query):
        super().__init__()
        self.table = table
        self.query = query
        self.rowids = None  # (low, high): search only this rowid range
        self.ignored = False  # render as TRUE: the query as if it had no word search

    def __sql__(self, ctx):
        if self.ignored:
            return ctx.literal("1 = 1")
        ctx.literal(f"rowid IN (SELECT rowid FROM {self.table}_fts WHERE {self.table}_fts MATCH ")
        ctx.value(self.query)
        if self.rowids is not None:
            ctx.literal(" AND rowid BETWEEN ").value(self.rowids[0]).literal(" AND ").value(self.rowids[1])
        return ctx.literal(")")

    def count(self, at_most):
        """Matches in the whole index (every workspace), counted up to `at_most`."""
        return db.execute_sql(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {self.table}_fts WHERE {self.table}_fts MATCH ? LIMIT ?)",
            (self.query, at_most)).fetchone()[0]


class FewMatches(pw.ColumnBase):
    """A condition its maker knows few rows match: on SQLite, which keeps no statistics to tell,
    first_rows() then starts a page from those rows (read by their own index, then sorted)
    instead of walking the sort index and filtering it."""

    def __init__(self, condition):
        super().__init__()
        self.condition = condition

    def __sql__(self, ctx):
        return ctx.sql(self.condition)


def _required(where, kind):
    """The `kind` node that `where` requires (one of its AND-ed terms), if any."""
    if isinstance(where, kind):
        return where
    if isinstance(where, pw.Expression) and where.op == pw.OP.AND:
        return _required(where.lhs, kind) or _required(where.rhs, kind)
    return None


def _word_match(where):
    return _required(where, WordMatch)


def _from_the_matches(query):
    """`query` ordered so SQLite does not walk the sort index: a unary + on the sort field
    keeps it from serving the order, so the plan starts from the matches."""
    first, *rest = query._order_by
    return query.order_by(pw.Ordering(pw.NodeList((pw.SQL("+"), first.node), glue=""), first.direction), *rest)


ROWID = pw.SQL("rowid")
# Rows at the head of the sort index a word search is first narrowed to, widening in turn.
HEAD_WINDOWS = (1_000, 16_000)
# Beyond this many rowids per row of the head, the sort does not follow insertion order (e.g.
# risk_score) and narrowing to the head's rowid range saves nothing.
MAX_SPREAD = 32
# With at most this many matches in the whole index, start from the matches, not the index.
FEW_MATCHES = 20_000


def _fetch(query):
    """The rows as the driver returns them: converting every value costs more than the query."""
    return db.execute(query).fetchall()


def first_rows(query, count, sort_field, descending):
    """The first `count` rows of `query`, ordered by `sort_field` then id, which may hold a
    word search (matches()); as tuples of the values the driver returns (no field conversions).

    On SQLite, `rowid IN (matches)` is evaluated in full before the sort index is walked:
    hundreds of thousands of rowids for a common word, to show 25 rows. But a list sorted by
    created_at or updated_at follows insertion order, so its first matches lie among the rows
    at the head of the index: take the head's rowid range from the index, search only that
    range, and widen the head when it held too few. Where that cannot work (another sort, or
    the word is rare), start from the matches if they are few, else from the index.
    """
    if not is_postgres() and _required(query._where, FewMatches):
        return _fetch(_from_the_matches(query).limit(count))
    match = None if is_postgres() or sort_field.null else _word_match(query._where)
    if match is None:
        return _fetch(query.limit(count))
    for window in HEAD_WINDOWS:
        match.ignored = True
        try:
            head = query.select(ROWID.alias("r"), sort_field.alias("s")).limit(window)
            low, high, last, rows_in_head = pw.Select([head.alias("head")], [
                pw.fn.MIN(pw.SQL("r")), pw.fn.MAX(pw.SQL("r")),
                (pw.fn.MIN if descending else pw.fn.MAX)(pw.SQL("s")), pw.fn.COUNT(pw.SQL("*"))]
            ).bind(db).scalar(as_tuple=True)
        finally:
            match.ignored = False
        if not rows_in_head:
            return []
        if high - low >= MAX_SPREAD * window:
            break
        narrowed = query
        if rows_in_head == window:
            # Rows tied with the head's last one may lie outside its rowid range: leave them
            # to a wider head.
            last = sort_field.python_value(last)
            narrowed = query.where((sort_field > last) if descending else (sort_field < last))
        match.rowids = (low, high)
        try:
            rows = _fetch(narrowed.limit(count))
        finally:
            match.rowids = None
        if len(rows) == count or rows_in_head < window:
            return rows
    if match.count(FEW_MATCHES + 1) <= FEW_MATCHES:
        query = _from_the_matches(query)
    return _fetch(query.limit(count))
