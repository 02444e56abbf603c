"""Issues: list, search, fetch and create the failures of a workspace."""
import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from app.api import Blueprint, CommaList, HttpUrl, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate, sort_field
from app.rendering import rendered_object
from models import ISSUE_STATUSES, SEVERITIES, Issue
from models.grouping import similarity
from models.issues import BULK_OPS

blp = Blueprint("issues", __name__, url_prefix="/v1", protector=protector,
                description="Issues: one failure each (an incident, a defect, a failed check).")

Length = ma.validate.Length
OneOf = ma.validate.OneOf


class IssueSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "iss_01abc123"})
    title = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    status = ma.fields.String(required=True, metadata={"enum": list(ISSUE_STATUSES)})
    severity = ma.fields.String(required=True, metadata={"enum": list(SEVERITIES)})
    pattern_id = ma.fields.String(required=True, allow_none=True)
    source = ma.fields.String(required=True)
    external_id = ma.fields.String(required=True, allow_none=True)
    external_url = ma.fields.String(required=True, allow_none=True)
    team = ma.fields.String(required=True, allow_none=True)
    risk_score = ma.fields.Integer(required=True, metadata={"minimum": 0, "maximum": 100})
    metadata = ma.fields.Dict(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)
    resolved_at = Timestamp(required=True, allow_none=True)
    fingerprint = ma.fields.Nested("FingerprintSchema", required=True, allow_none=True, metadata={
        "description": "The root cause detection assigned at ingestion, if any."})
    detection = ma.fields.Dict(required=True, allow_none=True, metadata={
        "description": "How it was placed: `method` (provided, rule, vocabulary, similarity, manual), "
                       "`pattern_id`, `score` and `threshold`, `runner_up`, the vocabulary's matched "
                       "signals, `model_version`."})
    pinned = ma.fields.Boolean(required=True, metadata={
        "description": "A person placed it: automatic grouping never moves it."})


class FingerprintSchema(ma.Schema):
    domain = ma.fields.String(required=True, validate=Length(1, 100), metadata={"example": "payments"})
    root_cause = ma.fields.String(required=True, validate=Length(1, 100),
                                  metadata={"example": "third_party_timeout"})


class SimilarQuerySchema(ma.Schema):
    limit = ma.fields.Integer(load_default=10, validate=ma.validate.Range(1, 50, error="Must be between 1 and 50."))


class SimilarItemSchema(ma.Schema):
    issue = ma.fields.Nested(IssueSchema, required=True)
    score = ma.fields.Float(required=True, metadata={
        "minimum": -1, "maximum": 1, "description": "Similarity of the two texts as grouping compares them."})
    would_group = ma.fields.Boolean(required=True, metadata={
        "description": "The score clears the workspace's grouping threshold."})


class SimilarListSchema(ma.Schema):
    data = ma.fields.List(ma.fields.Nested(SimilarItemSchema), required=True)


class IssueWriteFields(ma.Schema):
    """Fields a client may send when creating or updating an issue."""

    title = ma.fields.String(validate=Length(1, 300))
    description = ma.fields.String(validate=Length(max=10_000))
    status = ma.fields.String(validate=OneOf(ISSUE_STATUSES))
    severity = ma.fields.String(validate=OneOf(SEVERITIES))
    pattern_id = ma.fields.String(allow_none=True, validate=Length(1, 40))
    team = ma.fields.String(allow_none=True, validate=Length(max=100))
    external_url = HttpUrl(allow_none=True)
    metadata = ma.fields.Dict(keys=ma.fields.String(validate=Length(1, 100)))


class IssueUpdateSchema(IssueWriteFields):
    """Any subset of the writable fields. Sending `pattern_id` (a pattern, or null to unlink)
    places the issue by hand: it is pinned there. `pinned: false` hands it back to automatic
    grouping."""

    pinned = ma.fields.Boolean(validate=ma.validate.Equal(False, error="Only false: pin by sending pattern_id."),
                               metadata={"description": "Only `false`: unpin, and place it automatically."})


class IssueCreateSchema(IssueWriteFields):
    title = ma.fields.String(required=True, validate=Length(1, 300))
    source = ma.fields.String(validate=Length(1, 64))
    external_id = ma.fields.String(allow_none=True, validate=Length(1, 255))


class IssueQuerySchema(PageArgsSchema):
    status = CommaList(ISSUE_STATUSES)
    severity = CommaList(SEVERITIES)
    pattern_id = CommaList(metadata={"description": "Comma-separated pattern ids."})
    source = CommaList(metadata={"description": "Comma-separated sources."})
    created_after = Timestamp(metadata={"description": "Created at or after (ISO-8601)."})
    created_before = Timestamp(metadata={"description": "Created before (ISO-8601)."})
    q = ma.fields.String(validate=Length(1, 200), metadata={
        "description": 'Word search over title and description: words, "phrases", OR, -exclude.'})
    sort = sort_field(Issue.SORTS, "-created_at")

    @ma.validates_schema
    def date_range(self, data, **kwargs):
        if data.get("created_after") and data.get("created_before") and \
                data["created_after"] >= data["created_before"]:
            raise ma.ValidationError("created_after must be before created_before.", "created_after")


class BulkSchema(ma.Schema):
    # What `value` may be depends on `op`: one alternative per operation.
    OPENAPI_RULES = {"oneOf": [
        {"properties": {"op": {"enum": ["set_status"]}, "value": {"type": "string", "enum": list(ISSUE_STATUSES)}},
         "required": ["value"]},
        {"properties": {"op": {"enum": ["set_severity"]}, "value": {"type": "string", "enum": list(SEVERITIES)}},
         "required": ["value"]},
        {"properties": {"op": {"enum": ["link_pattern"]},
                        "value": {"type": "string", "minLength": 1, "maxLength": 40}}, "required": ["value"]},
        {"properties": {"op": {"enum": ["unlink_pattern"]}, "value": {"type": "null"}}},
    ]}

    ids = ma.fields.List(ma.fields.String(validate=Length(1, 40)), required=True, validate=Length(1, 100))
    op = ma.fields.String(required=True, validate=OneOf(BULK_OPS))
    value = ma.fields.Raw(allow_none=True, metadata={
        "description": "A status (set_status), a severity (set_severity), a pattern id (link_pattern); "
                       "absent or null for unlink_pattern."})

    @ma.validates_schema
    def value_fits_op(self, data, **kwargs):
        value, op = data.get("value"), data.get("op")
        allowed = {"set_status": ISSUE_STATUSES, "set_severity": SEVERITIES}.get(op)
        if allowed is not None and value not in allowed:
            raise ma.ValidationError(f"Must be one of: {', '.join(allowed)}.", "value")
        if op == "link_pattern" and not (isinstance(value, str) and 0 < len(value) <= 40):
            raise ma.ValidationError("Must be a pattern id.", "value")
        if op == "unlink_pattern" and value is not None:
            raise ma.ValidationError("Must be absent or null for unlink_pattern.", "value")


class BulkResultSchema(ma.Schema):
    updated = ma.fields.Integer(required=True)
    not_found = ma.fields.List(ma.fields.String(), required=True)


IssueListSchema = list_schema(IssueSchema, "IssueList")


@blp.route("/issues")
class Issues(MethodView):
    @blp.auth_required("issues:read")
    @blp.arguments(IssueQuerySchema, location="query")
    @blp.response(200, IssueListSchema)
    def get(self, args):
        """List issues, newest first, with filters and a keyset cursor."""
        query = Issue.search(current_principal().workspace_id, args)
        return paginate(query, args, sorts=Issue.SORTS, id_field=Issue.id, item_schema=IssueSchema)

    @blp.auth_required("issues:write")
    @blp.idempotent
    @blp.arguments(IssueCreateSchema)
    @blp.response(201, IssueSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.links(201, "/v1/issues/{issue_id}", ["get", "patch"], issue_id="$response.body#/id")
    @blp.links(201, "/v1/issues/{issue_id}/close", ["post"], issue_id="$response.body#/id")
    @blp.errors(409, 422)
    def post(self, body):
        """Create an issue."""
        issue = Issue.create_in(current_principal().workspace_id, body)
        return issue, {"Location": url_for("issues.IssueById", issue_id=issue.id)}


@blp.route('/issues/<id("iss"):issue_id>')
class IssueById(MethodView):
    @blp.auth_required("issues:read")
    @blp.response(200, IssueSchema)
    @blp.errors(404)
    def get(self, issue_id):
        """Fetch one issue."""
        return rendered_object(IssueSchema, Issue, issue_id, current_principal().workspace_id)

    @blp.auth_required("issues:write")
    @blp.arguments(IssueUpdateSchema)
    @blp.response(200, IssueSchema)
    @blp.errors(404, 422)
    def patch(self, changes, issue_id):
        """Update an issue. Resolving or closing sets `resolved_at`; reopening clears it."""
        return Issue.update_in(issue_id, current_principal().workspace_id, changes)


@blp.route('/issues/<id("iss"):issue_id>/close', methods=["POST"])
@blp.auth_required("issues:write")
@blp.response(200, IssueSchema)
@blp.errors(404)
def close_issue(issue_id):
    """Close an issue (shorthand for `status: closed`)."""
    return Issue.update_in(issue_id, current_principal().workspace_id, {"status": "closed"})


@blp.route("/issues/bulk", methods=["POST"])
@blp.auth_required("issues:write")
@blp.arguments(BulkSchema)
@blp.response(200, BulkResultSchema)
@blp.errors(422)
def bulk_update(body):
    """Apply one operation to up to 100 issues, in one transaction."""
    updated, not_found = Issue.bulk_update(current_principal().workspace_id, body["ids"], body["op"],
                                           body.get("value"))
    return {"updated": updated, "not_found": not_found}


@blp.route('/issues/<id("iss"):issue_id>/similar')
@blp.auth_required("issues:read")
@blp.arguments(SimilarQuerySchema, location="query")
@blp.response(200, SimilarListSchema)
@blp.errors(404)
def similar_issues(args, issue_id):
    """The issues most like this one, as grouping scores them, and whether they would group."""
    issue = Issue.get_in_workspace(issue_id, current_principal().workspace_id)
    return {"data": [{"issue": other, "score": score, "would_group": would}
                     for other, score, would in similarity.neighbours(issue, args["limit"])]}


@blp.route('/issues/<id("iss"):issue_id>/reanalyze', methods=["POST"])
@blp.auth_required("issues:write")
@blp.response(200, IssueSchema)
@blp.errors(404, 409)
def reanalyze_issue(issue_id):
    """Place an unpinned issue afresh, as if it had just arrived (`detection` says where and why)."""
    return Issue.reanalyze_in(issue_id, current_principal().workspace_id)
