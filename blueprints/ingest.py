"""Ingestion: failures from other systems (alerting, error trackers, CI) become issues."""
import marshmallow as ma
from flask.views import MethodView

from app.api import Blueprint, HttpUrl, Timestamp
from app.auth import current_principal
from app.errors import flatten_messages
from app.extensions import protector
from blueprints.patterns import FingerprintSchema
from models import SEVERITIES
from models.ingest import ingest

blp = Blueprint("ingest", __name__, url_prefix="/v1/ingest", protector=protector,
                description="Send failures in; they are deduplicated, fingerprinted and grouped into patterns.")

Length = ma.validate.Length
SEVERITY_ALIASES = {"p1": "critical", "p2": "high", "p3": "medium", "p4": "low"}
MAX_BATCH = 500


class RecordSchema(ma.Schema):
    OPENAPI_RULES = {"anyOf": [{"required": ["title"]},
                               {"properties": {"external_id": {"type": "string"}}, "required": ["external_id"]}]}

    source = ma.fields.String(load_default="custom_api", validate=Length(1, 64))
    external_id = ma.fields.String(allow_none=True, validate=Length(1, 255), metadata={
        "description": "With `source`, identifies the failure: a repeat updates its issue."})
    title = ma.fields.String(validate=Length(1, 300), metadata={"description": "Defaults to external_id."})
    body = ma.fields.String(validate=Length(max=10_000))
    severity = ma.fields.String(load_default="medium", validate=ma.validate.OneOf(
        SEVERITIES + tuple(SEVERITY_ALIASES)), metadata={"description": "p1-p4 or low..critical."})
    external_url = HttpUrl(allow_none=True)
    team = ma.fields.String(allow_none=True, validate=Length(max=100))
    source_created_at = Timestamp(metadata={"description": "When it happened; becomes created_at."})
    metadata = ma.fields.Dict(keys=ma.fields.String(validate=Length(1, 100)))
    fingerprint = ma.fields.Nested(FingerprintSchema, metadata={
        "description": "The root cause if the sender knows it; otherwise it is inferred."})

    @ma.validates_schema
    def title_or_external_id(self, data, **kwargs):
        if not data.get("title") and not data.get("external_id"):
            raise ma.ValidationError("A record needs a title or an external_id.", "title")

    @ma.post_load
    def normalize(self, data, **kwargs):
        record = {key: value for key, value in data.items() if key not in ("body", "source_created_at")}
        record["title"] = data.get("title") or data["external_id"][:300]
        record["severity"] = SEVERITY_ALIASES.get(data["severity"], data["severity"])
        if "body" in data:
            record["description"] = data["body"]
        if "source_created_at" in data:
            record["created_at"] = data["source_created_at"]
        return record


class BatchSchema(ma.Schema):
    # Any JSON value: one that is not a record object (null included) is listed as rejected.
    records = ma.fields.List(ma.fields.Raw(allow_none=True), required=True, validate=Length(1, MAX_BATCH), metadata={
        "description": f"1-{MAX_BATCH} records (see IngestRecord); each is checked on its own."})


class RejectedSchema(ma.Schema):
    index = ma.fields.Integer(required=True)
    reason = ma.fields.String(required=True)


class IngestResultSchema(ma.Schema):
    accepted = ma.fields.Integer(required=True)
    rejected = ma.fields.List(ma.fields.Nested(RejectedSchema), required=True)
    issue_ids = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "The issue of each accepted record, in order (existing ones for repeats)."})


def check_records(records):
    """Validate each record on its own: (valid records, rejections)."""
    schema, valid, rejected = RecordSchema(), [], []
    for index, raw in enumerate(records):
        if not isinstance(raw, dict):
            rejected.append({"index": index, "reason": "record must be a JSON object"})
            continue
        try:
            valid.append(schema.load(raw))
        except ma.ValidationError as error:
            problems = flatten_messages(error.messages)
            reason = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in problems.items())
            rejected.append({"index": index, "reason": reason})
    return valid, rejected


@blp.route("/events")
class IngestOne(MethodView):
    @blp.auth_required("ingest:write")
    @blp.idempotent
    @blp.arguments(RecordSchema(), description="One failure record.")
    @blp.response(202, IngestResultSchema)
    def post(self, record):
        """Ingest one failure record."""
        return {"accepted": 1, "rejected": [], "issue_ids": ingest(current_principal().workspace_id, [record])}


@blp.route("/batch")
class IngestBatch(MethodView):
    @blp.auth_required("ingest:write")
    @blp.idempotent
    @blp.arguments(BatchSchema)
    @blp.response(202, IngestResultSchema)
    def post(self, body):
        """Ingest up to 500 records; a bad record is listed, never sinks the others."""
        valid, rejected = check_records(body["records"])
        issue_ids = ingest(current_principal().workspace_id, valid) if valid else []
        return {"accepted": len(valid), "rejected": rejected, "issue_ids": issue_ids}
