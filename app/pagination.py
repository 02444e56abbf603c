"""Keyset pagination with opaque, signed cursors bound to the endpoint, filters and sort."""
import datetime
import hashlib
import json
import time

import marshmallow as ma
from flask import current_app, request
from itsdangerous import BadData, URLSafeSerializer
from peewee import SQL

from models import db
from models.search import first_rows, is_postgres

from .errors import ApiError

MALFORMED = "malformed cursor token"
EXACT_TOTAL_LIMIT = 10_000
PAGE_ARGS = ("limit", "cursor")
# SQLite, above EXACT_TOTAL_LIMIT: a count this process made at most this long ago stands.
RECENT_COUNT_TTL_S = 30
RECENT_COUNTS_KEPT = 1_000
_recent_counts = {}  # (sql, params) -> (count, time.monotonic() when counted)


class PageArgsSchema(ma.Schema):
    """`limit` and `cursor`, shared by every list endpoint's query schema."""

    limit = ma.fields.Integer(
        load_default=25, validate=ma.validate.Range(1, 100, error="Must be between 1 and 100."),
        metadata={"description": "Items per page, 1-100."})
    cursor = ma.fields.String(
        validate=ma.validate.Length(max=2048),
        metadata={"description": "`page.next_cursor` of the previous page; omit for the first."})


class PageSchema(ma.Schema):
    next_cursor = ma.fields.String(allow_none=True, required=True)
    has_more = ma.fields.Boolean(required=True)
    total = ma.fields.Integer(required=True, metadata={
        "description": f"Exact up to {EXACT_TOTAL_LIMIT:,} matches; an estimate above."})


def list_schema(item_schema, name):
    """`{"data": [...], "page": {...}}` for one item schema."""
    return ma.Schema.from_dict({
        "data": ma.fields.List(ma.fields.Nested(item_schema), required=True),
        "page": ma.fields.Nested(PageSchema, required=True),
    }, name=name)


def _serializer():
    return URLSafeSerializer(current_app.config["JWT_SECRET"], salt="causeloop.cursor")


def _binding(args):
    """A digest of what the cursor is valid for: endpoint, path, filters and sort."""
    scope = {key: value for key, value in args.items() if key not in PAGE_ARGS}
    material = json.dumps([request.endpoint, request.view_args, scope], sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _encode_value(value):
    if isinstance(value, datetime.datetime):
        return {"t": value.isoformat()}
    return value


def _decode_value(value):
    if isinstance(value, dict):
        return datetime.datetime.fromisoformat(value["t"])
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise ValueError("unexpected cursor value")


def _read_cursor(token, binding):
    try:
        bound, value, last_id = _serializer().loads(token)
        if bound != binding or not isinstance(last_id, str):
            raise ValueError("cursor made for another query")
        return _decode_value(value), last_id
    except (BadData, ValueError, TypeError, KeyError):
        raise ApiError(400, MALFORMED, details={"cursor": [MALFORMED]}) from None


def _after(field, id_field, descending, value, last_id):
    """Rows strictly after (value, last_id) in the order (field, id), nulls last."""
    before = (lambda a, b: a < b) if descending else (lambda a, b: a > b)
    if value is None:
        return field.is_null() & before(id_field, last_id)
    if field.null:
        return before(field, value) | ((field == value) & before(id_field, last_id)) | field.is_null()
    # Written as a range plus a filter so the (field, id) index serves it.
    at_or_before = (field <= value) if descending else (field >= value)
    return at_or_before & (before(field, value) | before(id_field, last_id))


def count_matches(query):
    """Exact up to EXACT_TOTAL_LIMIT; beyond it, the database's cheapest honest answer.

    PostgreSQL: the planner's row estimate. SQLite has none worth the name, and an exact count
    of a million rows takes tens of milliseconds (hundreds behind a word search): the exact
    count this process made within RECENT_COUNT_TTL_S stands. A recent count well above the
    limit is not even rechecked against it (it cannot fall below in that time but through
    thousands of writes); one near the limit is.
    """
    query = query.order_by()
    if is_postgres():
        capped = query.limit(EXACT_TOTAL_LIMIT + 1).count()
        return capped if capped <= EXACT_TOTAL_LIMIT else max(capped, _planner_estimate(query))
    sql, params = query.select(SQL("1")).sql()  # what is counted; the columns do not matter
    key = (sql, tuple(params))
    now = time.monotonic()
    recent, counted_at = _recent_counts.get(key, (None, 0.0))
    if recent is not None and now - counted_at > RECENT_COUNT_TTL_S:
        recent = None
    if recent is not None and recent > 2 * EXACT_TOTAL_LIMIT:
        return recent
    capped = query.limit(EXACT_TOTAL_LIMIT + 1).count()
    if capped <= EXACT_TOTAL_LIMIT:
        return capped
    if recent is None:
        recent = query.count()
        if len(_recent_counts) >= RECENT_COUNTS_KEPT:
            _recent_counts.clear()
        _recent_counts[key] = (recent, now)
    return recent


def _planner_estimate(query):
    sql, params = query.sql()
    plan = db.execute_sql("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def paginate(query, args, *, sorts, id_field):
    """One page of `query` as `{"data": rows, "page": {...}}`, ordered by args["sort"] then id.

    `sorts` maps the public sort names to model fields; args["sort"] was validated by
    `sort_field()` in the query schema.
    """
    descending = args["sort"].startswith("-")
    sort_field = sorts[args["sort"].lstrip("-")]
    binding = _binding(args)
    limit = args["limit"]
    direction = "desc" if descending else "asc"
    ordered = query.order_by(getattr(sort_field, direction)(nulls="LAST" if sort_field.null else None),
                             getattr(id_field, direction)())
    if args.get("cursor"):
        value, last_id = _read_cursor(args["cursor"], binding)
        ordered = ordered.where(_after(sort_field, id_field, descending, value, last_id))
    rows = first_rows(ordered, limit + 1, sort_field, descending)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        next_cursor = _serializer().dumps(
            [binding, _encode_value(getattr(last, sort_field.name)), getattr(last, id_field.name)])
    return {"data": rows,
            "page": {"next_cursor": next_cursor, "has_more": has_more, "total": count_matches(query)}}


def sort_field(sorts, default):
    """The `sort` query field: one of `sorts`, `-` for descending."""
    allowed = ", ".join(f"{name}, -{name}" for name in sorts)

    def validate(value):
        if value.lstrip("-") not in sorts or value.startswith("--"):
            raise ma.ValidationError(f"Unknown sort field {value!r}; must be one of: {allowed}.")

    return ma.fields.String(load_default=default, validate=validate, metadata={
        "description": f"One field, `-` prefix for descending. Default `{default}`. Any of: {allowed}."})
