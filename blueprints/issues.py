"""Issues: list, search, fetch and create the failures of a workspace."""
import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from app.api import Blueprint, CommaList, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate, sort_field
from models import ISSUE_STATUSES, SEVERITIES, Issue

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


class IssueWriteFields(ma.Schema):
    """Fields a client may send when creating or updating an issue."""

    title = ma.fields.String(validate=Length(1, 300))
    description = ma.fields.String(validate=Length(max=10_000))
    status = ma.fields.String(validate=OneOf(ISSUE_STATUSES))
    severity = ma.fields.String(validate=OneOf(SEVERITIES))
    pattern_id = ma.fields.String(allow_none=True, validate=Length(1, 40))
    team = ma.fields.String(allow_none=True, validate=Length(max=100))
    external_url = ma.fields.Url(allow_none=True, schemes={"http", "https"}, validate=Length(max=2048))
    metadata = ma.fields.Dict(keys=ma.fields.String(validate=Length(1, 100)))


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
    sort = sort_field(Issue.SORTS, "-created_at")


IssueListSchema = list_schema(IssueSchema, "IssueList")


@blp.route("/issues")
class Issues(MethodView):
    @blp.auth_required("issues:read")
    @blp.arguments(IssueQuerySchema, location="query")
    @blp.response(200, IssueListSchema)
    def get(self, args):
        """List issues, newest first, with filters and a keyset cursor."""
        query = Issue.search(current_principal().workspace_id, args)
        return paginate(query, args, sorts=Issue.SORTS, id_field=Issue.id)

    @blp.auth_required("issues:write")
    @blp.arguments(IssueCreateSchema)
    @blp.response(201, IssueSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.errors(409, 422)
    def post(self, body):
        """Create an issue."""
        issue = Issue.create_in(current_principal().workspace_id, body)
        return issue, {"Location": url_for("issues.IssueById", issue_id=issue.id)}


@blp.route("/issues/<string:issue_id>")
class IssueById(MethodView):
    @blp.auth_required("issues:read")
    @blp.response(200, IssueSchema)
    @blp.errors(404)
    def get(self, issue_id):
        """Fetch one issue."""
        return Issue.get_in_workspace(issue_id, current_principal().workspace_id)
