"""Patterns: clusters of issues sharing a root-cause fingerprint."""
import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from app.api import Blueprint, CommaList, StrictInteger, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate, sort_field
from app.rendering import rendered_object
from blueprints.issues import FingerprintSchema, IssueListSchema, IssueQuerySchema, IssueSchema
from models import PATTERN_STATUSES, Issue, Pattern
from models.grouping import corrections
from models.patterns import WRITABLE_STATUSES

blp = Blueprint("patterns", __name__, url_prefix="/v1", protector=protector,
                description="Patterns: issues that share a root cause, with a risk score.")

Length = ma.validate.Length


class PatternSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "pat_01xyz789"})
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    status = ma.fields.String(required=True, metadata={"enum": list(PATTERN_STATUSES)})
    risk_score = ma.fields.Integer(required=True, metadata={"minimum": 0, "maximum": 100})
    issue_count = ma.fields.Integer(required=True, metadata={"description": "Linked issues (derived)."})
    last_seen_at = Timestamp(required=True, allow_none=True,
                             metadata={"description": "Newest linked issue's created_at (derived)."})
    fingerprint = ma.fields.Nested(FingerprintSchema, required=True, allow_none=True)
    tags = ma.fields.List(ma.fields.String(), required=True)
    merged_into = ma.fields.String(required=True, allow_none=True, attribute="merged_into_id", metadata={
        "description": "For a `merged` pattern, the pattern its issues moved to; else null."})
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class PatternWriteFields(ma.Schema):
    name = ma.fields.String(validate=Length(1, 200))
    description = ma.fields.String(validate=Length(max=10_000))
    status = ma.fields.String(validate=ma.validate.OneOf(WRITABLE_STATUSES), metadata={
        "description": "`merged` is set by a merge only."})
    risk_score = StrictInteger(validate=ma.validate.Range(0, 100))
    fingerprint = ma.fields.Nested(FingerprintSchema, allow_none=True)
    tags = ma.fields.List(ma.fields.String(validate=Length(1, 50)), validate=Length(max=20))


class PatternUpdateSchema(PatternWriteFields):
    """Any subset of the writable fields (the counters are derived, never written)."""


class PatternCreateSchema(PatternWriteFields):
    name = ma.fields.String(required=True, validate=Length(1, 200))


class PatternQuerySchema(PageArgsSchema):
    status = CommaList(PATTERN_STATUSES, metadata={
        "description": "Comma-separated statuses; without it, every status but `merged`."})
    domain = CommaList(metadata={"description": "Comma-separated fingerprint domains."})
    risk_min = ma.fields.Integer(validate=ma.validate.Range(0, 100))
    risk_max = ma.fields.Integer(validate=ma.validate.Range(0, 100))
    q = ma.fields.String(validate=Length(1, 200), metadata={"description": "Word search over the name."})
    sort = sort_field(Pattern.SORTS, "-risk_score")

    @ma.validates_schema
    def risk_range(self, data, **kwargs):
        if data.get("risk_min", 0) > data.get("risk_max", 100):
            raise ma.ValidationError("risk_min must not exceed risk_max.", "risk_min")


PatternListSchema = list_schema(PatternSchema, "PatternList")

class MergeSchema(ma.Schema):
    source_pattern_ids = ma.fields.List(ma.fields.String(validate=[Length(5, 40), ma.validate.Regexp(
        r"^pat_[A-Za-z0-9]+$")]), required=True, validate=Length(1, 100), metadata={
        "description": "The patterns merged into this one (1-100)."})


class SplitSchema(ma.Schema):
    issue_ids = ma.fields.List(ma.fields.String(validate=[Length(5, 40), ma.validate.Regexp(
        r"^iss_[A-Za-z0-9]+$")]), required=True, validate=Length(1, 500), metadata={
        "description": "Members of this pattern that form the new one (1-500); at least one must stay."})
    name = ma.fields.String(validate=Length(1, 200), metadata={
        "description": "The new pattern's name (default: this one's, with \" (split)\")."})


@blp.route("/patterns")
class Patterns(MethodView):
    @blp.auth_required("patterns:read")
    @blp.arguments(PatternQuerySchema, location="query")
    @blp.response(200, PatternListSchema)
    def get(self, args):
        """List patterns, riskiest first."""
        query = Pattern.search(current_principal().workspace_id, args)
        return paginate(query, args, sorts=Pattern.SORTS, id_field=Pattern.id, item_schema=PatternSchema)

    @blp.auth_required("patterns:write")
    @blp.idempotent
    @blp.arguments(PatternCreateSchema)
    @blp.response(201, PatternSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.links(201, "/v1/patterns/{pattern_id}", ["get", "patch"], pattern_id="$response.body#/id")
    @blp.links(201, "/v1/patterns/{pattern_id}/issues", ["get"], pattern_id="$response.body#/id")
    def post(self, body):
        """Create a pattern."""
        pattern = Pattern.create_in(current_principal().workspace_id, body)
        return pattern, {"Location": url_for("patterns.PatternById", pattern_id=pattern.id)}


@blp.route('/patterns/<id("pat"):pattern_id>')
class PatternById(MethodView):
    @blp.auth_required("patterns:read")
    @blp.response(200, PatternSchema)
    @blp.errors(404)
    def get(self, pattern_id):
        """Fetch one pattern."""
        return rendered_object(PatternSchema, Pattern, pattern_id, current_principal().workspace_id)

    @blp.auth_required("patterns:write")
    @blp.arguments(PatternUpdateSchema)
    @blp.response(200, PatternSchema)
    @blp.errors(404)
    def patch(self, changes, pattern_id):
        """Update a pattern."""
        return Pattern.update_in(pattern_id, current_principal().workspace_id, changes)


@blp.route('/patterns/<id("pat"):pattern_id>/merge', methods=["POST"])
@blp.auth_required("patterns:write")
@blp.arguments(MergeSchema)
@blp.response(200, PatternSchema)
@blp.errors(404, 422)
def merge_patterns(body, pattern_id):
    """Merge patterns into this one: their issues move here (pinned), they become `merged`.
    Later reports like theirs join this pattern."""
    return corrections.merge(current_principal().workspace_id, pattern_id, body["source_pattern_ids"])


@blp.route('/patterns/<id("pat"):pattern_id>/split', methods=["POST"])
@blp.auth_required("patterns:write")
@blp.arguments(SplitSchema)
@blp.response(201, PatternSchema, headers={"Location": {"schema": {"type": "string"}}})
@blp.errors(404, 422)
def split_pattern(body, pattern_id):
    """Split some issues off into a new pattern (pinned there). The two are never merged again
    by automatic grouping."""
    new = corrections.split(current_principal().workspace_id, pattern_id, body["issue_ids"], body.get("name"))
    return new, {"Location": url_for("patterns.PatternById", pattern_id=new.id)}


@blp.route('/patterns/<id("pat"):pattern_id>/issues')
@blp.auth_required("issues:read")
@blp.arguments(IssueQuerySchema(exclude=("pattern_id",)), location="query")
@blp.response(200, IssueListSchema)
@blp.errors(404)
def pattern_issues(args, pattern_id):
    """List the issues linked to a pattern (same parameters as the issue list)."""
    workspace_id = current_principal().workspace_id
    Pattern.get_in_workspace(pattern_id, workspace_id)
    query = Issue.search(workspace_id, {**args, "pattern_id": [pattern_id]})
    return paginate(query, args, sorts=Issue.SORTS, id_field=Issue.id, item_schema=IssueSchema)
