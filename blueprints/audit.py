"""The audit log: read and export only; no route edits or deletes an entry."""
import json

import marshmallow as ma
from flask import current_app, stream_with_context

from app.api import Blueprint, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate
from models import AuditEntry

blp = Blueprint("audit", __name__, url_prefix="/v1", protector=protector,
                description="The workspace's audit log: who changed what, from where, in which request. "
                            "Append-only: entries are written by the changes they record.")

EXPORT_BATCH = 500
SORTS = {"occurred_at": AuditEntry.occurred_at}


class ActorSchema(ma.Schema):
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(("user", "service_account", "system")))
    id = ma.fields.String(required=True)
    display = ma.fields.String(required=True)


class TargetSchema(ma.Schema):
    type = ma.fields.String(required=True)
    id = ma.fields.String(required=True, allow_none=True)


class AuditEntrySchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "aud_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    occurred_at = Timestamp(required=True)
    action = ma.fields.String(required=True, metadata={"example": "member.role_changed"})
    actor = ma.fields.Nested(ActorSchema, required=True)
    target = ma.fields.Nested(TargetSchema, required=True, allow_none=True)
    ip = ma.fields.String(required=True, allow_none=True)
    user_agent = ma.fields.String(required=True, allow_none=True)
    request_id = ma.fields.String(required=True, allow_none=True)
    changes = ma.fields.Dict(required=True, allow_none=True, metadata={
        "description": "Before/after values (or what the action did); never a secret."})

    @ma.pre_dump
    def nest(self, entry, **kwargs):
        return {**entry.__data__, "actor": {"type": entry.actor_type, "id": entry.actor_id,
                                            "display": entry.actor_display},
                "target": None if entry.target_type is None else {"type": entry.target_type, "id": entry.target_id}}


class AuditFilterSchema(ma.Schema):
    action = ma.fields.String(validate=ma.validate.Length(1, 64), metadata={
        "description": "Entries whose action starts with this (`member.` for every member change)."})
    actor_id = ma.fields.String(validate=ma.validate.Length(1, 64))
    target_id = ma.fields.String(validate=ma.validate.Length(1, 64))
    since = Timestamp(metadata={"description": "At or after this time."})
    until = Timestamp(metadata={"description": "Before this time."})


class AuditQuerySchema(AuditFilterSchema, PageArgsSchema):
    pass


AuditListSchema = list_schema(AuditEntrySchema, "AuditEntryList")


def filtered(workspace_id, args):
    query = AuditEntry.in_workspace(workspace_id)
    if args.get("action"):
        query = query.where(AuditEntry.action_starts_with(workspace_id, args["action"]))
    for name in ("actor_id", "target_id"):
        if args.get(name):
            query = query.where(getattr(AuditEntry, name) == args[name])
    if args.get("since"):
        query = query.where(AuditEntry.occurred_at >= args["since"])
    if args.get("until"):
        query = query.where(AuditEntry.occurred_at < args["until"])
    return query


@blp.route("/audit-log")
@blp.auth_required("audit:read")
@blp.arguments(AuditQuerySchema, location="query")
@blp.response(200, AuditListSchema)
def audit_log(args):
    """List audit entries, newest first, filtered by action prefix, actor, target and time."""
    query = filtered(current_principal().workspace_id, args)
    return paginate(query, {**args, "sort": "-occurred_at"}, sorts=SORTS, id_field=AuditEntry.id,
                    item_schema=AuditEntrySchema)


@blp.route("/audit-log/export")
@blp.auth_required("audit:read")
@blp.arguments(AuditFilterSchema, location="query")
@blp.doc(responses={200: {"description": "One entry per line (JSON Lines), oldest first.",
                          "content": {"application/jsonl": {"schema": {"type": "string"}}}}})
def export_audit_log(args):
    """Export the matching audit entries as JSON Lines, oldest first, streamed."""
    query = filtered(current_principal().workspace_id, args)
    dump = AuditEntrySchema().dump

    def lines():
        after = None
        while True:
            page = query.order_by(AuditEntry.occurred_at, AuditEntry.id)
            if after is not None:
                page = page.where((AuditEntry.occurred_at > after[0])
                                  | ((AuditEntry.occurred_at == after[0]) & (AuditEntry.id > after[1])))
            batch = list(page.limit(EXPORT_BATCH))
            for entry in batch:
                yield json.dumps(dump(entry), separators=(",", ":")) + "\n"
            if len(batch) < EXPORT_BATCH:
                return
            after = (batch[-1].occurred_at, batch[-1].id)

    return current_app.response_class(stream_with_context(lines()), mimetype="application/jsonl")
