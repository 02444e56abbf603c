"""Grouping rules: a workspace's own fingerprint rules, evaluated before the built-in vocabulary."""
import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from app.api import Blueprint, StrictInteger, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate
from app.rendering import rendered_object
from blueprints.issues import FingerprintSchema
from models import GroupingRule
from models.grouping.rules import MATCH_TYPES, MAX_PATTERN_LENGTH, MAX_POSITION, TEXT_FIELDS

blp = Blueprint("grouping_rules", __name__, url_prefix="/v1", protector=protector,
                description="Grouping rules: conditions that give an issue a fingerprint or a pattern, "
                            "tried in position order before the built-in vocabulary.")

Length = ma.validate.Length
OneOf = ma.validate.OneOf
SORTS = {"position": GroupingRule.position}


class StrictBoolean(ma.fields.Boolean):
    """JSON true or false only (not 1, "yes" or "true")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class TextMatchSchema(ma.Schema):
    field = ma.fields.String(load_default="text", validate=OneOf(TEXT_FIELDS), metadata={
        "description": "`title`, `description`, or `text` (the title, a newline, the description). Default `text`."})
    type = ma.fields.String(required=True, validate=OneOf(MATCH_TYPES), metadata={
        "description": "`contains`: a literal, case-insensitive; `glob`: fnmatch syntax (`*`, `?`, `[...]`), "
                       "case-insensitive, over the whole field; `regex`: RE2 syntax, found anywhere in the "
                       "field, case-sensitive unless it starts with `(?i)`."})
    pattern = ma.fields.String(required=True, validate=Length(1, MAX_PATTERN_LENGTH),
                               metadata={"example": "jwks"})


class MetadataConditionSchema(ma.Schema):
    key = ma.fields.String(required=True, validate=Length(1, 100), metadata={"example": "service"})
    value = ma.fields.String(validate=Length(max=MAX_PATTERN_LENGTH), metadata={
        "description": "Absent: the key is present. Given: the issue's value equals it exactly (a number or "
                       "boolean as its JSON, e.g. `5`, `true`)."})


class ConditionsSchema(ma.Schema):
    """All given conditions must hold; at least one."""

    OPENAPI_RULES = {"minProperties": 1}

    match = ma.fields.Nested(TextMatchSchema)
    source = ma.fields.String(validate=Length(1, 64), metadata={"description": "The issue's source, exactly."})
    team = ma.fields.String(validate=Length(1, 100), metadata={"description": "The issue's team, exactly."})
    metadata = ma.fields.Nested(MetadataConditionSchema)

    @ma.validates_schema
    def at_least_one(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Give at least one condition: match, source, team or metadata.")


class ActionSchema(ma.Schema):
    fingerprint = ma.fields.Nested(FingerprintSchema, required=True, allow_none=True)
    pattern_id = ma.fields.String(required=True, allow_none=True, metadata={"example": "pat_01xyz789"})


class ActionWriteSchema(ma.Schema):
    """Exactly one of them (the other absent or null)."""

    OPENAPI_RULES = {"oneOf": [{"properties": {"fingerprint": {"type": "object"}}, "required": ["fingerprint"]},
                               {"properties": {"pattern_id": {"type": "string"}}, "required": ["pattern_id"]}]}

    fingerprint = ma.fields.Nested(FingerprintSchema, allow_none=True, metadata={
        "description": "The root cause to give the issue; it joins that fingerprint's pattern."})
    pattern_id = ma.fields.String(allow_none=True, validate=Length(1, 40), metadata={
        "description": "A pattern of this workspace to link the issue to."})

    @ma.validates_schema
    def exactly_one(self, data, **kwargs):
        if sum(data.get(name) is not None for name in ("fingerprint", "pattern_id")) != 1:
            raise ma.ValidationError("Give exactly one action: fingerprint or pattern_id.")


class GroupingRuleSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "gru_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    name = ma.fields.String(required=True, allow_none=True)
    position = ma.fields.Integer(required=True, metadata={"description": "Rules are tried in ascending position; "
                                                                          "ties in creation order."})
    enabled = ma.fields.Boolean(required=True)
    conditions = ma.fields.Nested(ConditionsSchema, required=True)
    action = ma.fields.Nested(ActionSchema, required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class GroupingRuleWriteFields(ma.Schema):
    name = ma.fields.String(allow_none=True, validate=Length(1, 200))
    position = StrictInteger(validate=ma.validate.Range(0, MAX_POSITION), metadata={
        "description": "Default: after the workspace's last rule."})
    enabled = StrictBoolean(metadata={"description": "Default true; a disabled rule never matches."})
    conditions = ma.fields.Nested(ConditionsSchema)
    action = ma.fields.Nested(ActionWriteSchema)


class GroupingRuleCreateSchema(GroupingRuleWriteFields):
    conditions = ma.fields.Nested(ConditionsSchema, required=True)
    action = ma.fields.Nested(ActionWriteSchema, required=True)


class GroupingRuleUpdateSchema(GroupingRuleWriteFields):
    """Any subset of the fields; `conditions` and `action` are replaced whole."""


GroupingRuleListSchema = list_schema(GroupingRuleSchema, "GroupingRuleList")


@blp.route("/grouping-rules")
class GroupingRules(MethodView):
    @blp.auth_required("patterns:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, GroupingRuleListSchema)
    def get(self, args):
        """List the workspace's grouping rules in evaluation order."""
        query = GroupingRule.in_workspace(current_principal().workspace_id)
        return paginate(query, {**args, "sort": "position"}, sorts=SORTS, id_field=GroupingRule.id,
                        item_schema=GroupingRuleSchema)

    @blp.auth_required("patterns:write")
    @blp.idempotent
    @blp.arguments(GroupingRuleCreateSchema)
    @blp.response(201, GroupingRuleSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.links(201, "/v1/grouping-rules/{rule_id}", ["get", "patch", "delete"], rule_id="$response.body#/id")
    @blp.errors(422)
    def post(self, body):
        """Create a grouping rule."""
        rule = GroupingRule.create_in(current_principal().workspace_id, body)
        return rule, {"Location": url_for("grouping_rules.GroupingRuleById", rule_id=rule.id)}


@blp.route('/grouping-rules/<id("gru"):rule_id>')
class GroupingRuleById(MethodView):
    @blp.auth_required("patterns:read")
    @blp.response(200, GroupingRuleSchema)
    @blp.errors(404)
    def get(self, rule_id):
        """Fetch one grouping rule."""
        return rendered_object(GroupingRuleSchema, GroupingRule, rule_id, current_principal().workspace_id)

    @blp.auth_required("patterns:write")
    @blp.arguments(GroupingRuleUpdateSchema)
    @blp.response(200, GroupingRuleSchema)
    @blp.errors(404, 422)
    def patch(self, changes, rule_id):
        """Update a grouping rule."""
        return GroupingRule.update_in(rule_id, current_principal().workspace_id, changes)

    @blp.auth_required("patterns:write")
    @blp.response(204)
    @blp.errors(404)
    def delete(self, rule_id):
        """Delete a grouping rule."""
        GroupingRule.delete_in(rule_id, current_principal().workspace_id)
