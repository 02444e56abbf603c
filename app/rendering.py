"""Objects read (list rows, single GETs) rendered to the API's JSON by the database, from the
item schema.

Turning a page of 25-100 rows into model objects and dumping them through marshmallow costs
about 1.5 ms of Python per 25 rows, most of a list request; SQLite's json_object() or
PostgreSQL's json_build_object() renders the same rows in well under 0.1 ms. The expression is
built from the schema's fields and the model's columns, so the two cannot drift apart silently:
a field this module cannot render fails at the first request, and tests compare every list row
with the schema's dump of the same object (tests/test_rendering.py).
"""
import functools
import operator
import re

import peewee as pw
from flask import current_app
from marshmallow import fields as ma_fields

from app.api import Timestamp
from models.base import ChoiceIntField, NotFound, db, is_postgres, prepared_rows

_expressions = {}  # (schema class, model, on PostgreSQL) -> the JSON expression


def json_row(schema, model):
    """An SQL expression rendering a `model` row as the `schema` class dumps it, for a query
    of that one table (columns are named unqualified)."""
    key = (schema, model, is_postgres())
    if key not in _expressions:
        rendered = _object([(name, _value(model, name, field)) for name, field in schema().fields.items()])
        # As text: the driver would otherwise parse PostgreSQL's json into Python objects.
        rendered = pw.Cast(rendered, "text") if is_postgres() else rendered
        # Compiled once: compiling its ~100 nodes on every request would cost more than the
        # database's rendering of the rows.
        context = db.get_sql_context()
        with context.scope_values():
            context.sql(rendered)
        _expressions[key] = pw.SQL(*context.query())
    return _expressions[key]


def rendered_object(schema, model, object_id, workspace_id):
    """The response showing one object of the workspace as the `schema` class dumps it,
    rendered by the database; NotFound when the workspace has no such object."""
    rows = prepared_rows(f"{model.__name__}.rendered_object.{schema.__name__}", lambda object_id, workspace_id: (
        model.in_workspace(workspace_id).select(json_row(schema, model)).where(model.id == object_id).limit(1)),
        object_id=object_id, workspace_id=workspace_id)
    if not rows:
        raise NotFound(model.KIND, object_id)
    return current_app.response_class(rows[0][0], mimetype="application/json")


def _object(pairs):
    build = pw.fn.json_build_object if is_postgres() else pw.fn.json_object
    return build(*(part for name, value in pairs for part in (_literal(name), value)))


def _literal(word):
    """A key or choice as an SQL string literal: typed text on PostgreSQL, where a bound
    parameter inside json_build_object() would have no type."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", word):
        raise ValueError(f"not a plain name: {word!r}")
    return pw.SQL(f"'{word}'")


def _value(model, name, field):
    column = model._meta.columns.get(field.attribute or name)
    if isinstance(field, ma_fields.Nested) and not isinstance(column, pw.JSONField):
        return _nested(model, name, field)
    if column is None:
        raise TypeError(f"{model.__name__} has no column for the {name!r} field")
    if isinstance(field, Timestamp):
        # Stored as naive UTC, shown to the second with a Z (as Timestamp dumps it).
        if is_postgres():
            return pw.fn.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        return pw.fn.strftime("%Y-%m-%dT%H:%M:%SZ", column)
    if isinstance(column, ChoiceIntField):
        return pw.Case(column, [(rank, _literal(choice)) for rank, choice in enumerate(column.names)])
    if isinstance(column, pw.JSONField):
        # A Nested field over a JSON column too: the column holds the object as dumped.
        return pw.Cast(column, "json") if is_postgres() else pw.fn.json(column)
    if isinstance(column, pw.BooleanField):
        # SQLite stores 0/1; json() makes true/false JSON rather than numbers.
        return column if is_postgres() else pw.fn.json(pw.Case(None, [(column, "true")], "false"))
    if isinstance(field, (ma_fields.String, ma_fields.Integer, ma_fields.Float)):
        return column
    raise TypeError(f"no SQL rendering for {name!r} ({type(field).__name__})")


def _nested(model, name, field):
    """A nested object stored as `{name}_{subfield}` columns; null when all of them are."""
    columns = [model._meta.columns[f"{name}_{sub}"] for sub in field.schema.fields]
    absent = functools.reduce(operator.and_, (column.is_null() for column in columns))
    rendered = _object([(sub, _value(model, f"{name}_{sub}", sub_field))
                        for sub, sub_field in field.schema.fields.items()])
    return pw.Case(None, [(absent, None)], rendered)
