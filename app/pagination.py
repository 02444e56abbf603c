"""Keyset pagination with opaque, signed cursors bound to the endpoint, filters and sort."""
import datetime
import hashlib
import json
import time

import marshmallow as ma
from flask import current_app, request
from itsdangerous import BadData, URLSafeSerializer

from models import db
from models.base import is_postgres
from models.events import last_seq
from models.search import first_rows

from .auth import current_principal
from .errors import ApiError
from .rendering import json_row

MALFORMED = "malformed cursor token"
EXACT_TOTAL_LIMIT = 10_000
PAGE_ARGS = ("limit", "cursor")
# A count this process made at most this long ago may stand (count_matches()).
RECENT_COUNT_TTL_S = 30
RECENT_COUNTS_KEPT = 1_000


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


def count_matches(query, workspace_id, binding):
    """Exact up to EXACT_TOTAL_LIMIT; beyond it, the database's cheapest honest answer.

    A count this process made for the same query (workspace and cursor `binding`) stands while nothing was written to
    the workspace since (its event sequence has not moved) and it is under RECENT_COUNT_TTL_S
    old: that bounds what writes outside the API (the CLI) can leave unseen. After writes, a
    recent count well above the limit stands as the estimate (it cannot fall below the limit
    in that time but through thousands of writes); anything else is counted again.

    Counting: up to the limit, exactly. Above it, PostgreSQL's planner estimate; SQLite has none
    worth the name, so an exact count (tens of milliseconds over a million rows).
    """
    query = query.order_by()
    # (workspace, cursor binding) -> (count, the workspace's last_seq, monotonic time)
    recent_counts = current_app.extensions.setdefault("causeloop.recent_counts", {})
    version, now = last_seq(workspace_id), time.monotonic()
    key = (workspace_id, binding)
    recent, counted_version, counted_at = recent_counts.get(key, (None, None, 0.0))
    if recent is not None and now - counted_at <= RECENT_COUNT_TTL_S:
        if counted_version == version or recent > 2 * EXACT_TOTAL_LIMIT:
            return recent
    count = query.limit(EXACT_TOTAL_LIMIT + 1).count()
    if count > EXACT_TOTAL_LIMIT:
        count = max(count, _planner_estimate(query)) if is_postgres() else query.count()
    if len(recent_counts) >= RECENT_COUNTS_KEPT:
        recent_counts.clear()
    recent_counts[key] = (count, version, now)
    return count


def _planner_estimate(query):
    sql, params = query.sql()
    plan = db.execute_sql("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def paginate(query, args, *, sorts, id_field, item_schema, total=None):
    """One page of `query` as the response `{"data": rows, "page": {...}}`, ordered by
    args["sort"] then id, its rows rendered as the `item_schema` class dumps them (by the
    database: app/rendering.py).

    `sorts` maps the public sort names to model fields; args["sort"] was validated by
    `sort_field()` in the query schema. `total`, when given, counts the matches instead of the
    workspace-wide count cache (for lists that are one member's, not the workspace's).
    """
    workspace_id = current_principal().workspace_id
    descending = args["sort"].startswith("-")
    sort_field = sorts[args["sort"].lstrip("-")]
    binding = _binding(args)
    limit = args["limit"]
    direction = "desc" if descending else "asc"
    ordered = (query.select(json_row(item_schema, query.model), sort_field, id_field)
               .order_by(getattr(sort_field, direction)(nulls="LAST" if sort_field.null else None),
                         getattr(id_field, direction)()))
    if args.get("cursor"):
        value, last_id = _read_cursor(args["cursor"], binding)
        ordered = ordered.where(_after(sort_field, id_field, descending, value, last_id))
    rows = first_rows(ordered, limit + 1, sort_field, descending)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        _, last_value, last_id = rows[-1]
        next_cursor = _serializer().dumps([binding, _encode_value(sort_field.python_value(last_value)), last_id])
    page = {"next_cursor": next_cursor, "has_more": has_more,
            "total": count_matches(query, workspace_id, binding) if total is None else total(query)}
    body = '{"data":[%s],"page":%s}' % (",".join(row for row, _, _ in rows), current_app.json.dumps(page))
    return current_app.response_class(body, mimetype="application/json")


def sort_field(sorts, default):
    """The `sort` query field: one of `sorts`, `-` for descending (an enum in the document)."""
    choices = [form for name in sorts for form in (name, f"-{name}")]
    allowed = ", ".join(choices)
    return ma.fields.String(load_default=default, validate=ma.validate.OneOf(
        choices, error=f"Unknown sort field {{input!r}}; must be one of: {allowed}."), metadata={
        "description": f"One field, `-` prefix for descending. Default `{default}`. Any of: {allowed}."})
