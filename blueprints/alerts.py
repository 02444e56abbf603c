"""Alert rules: when a pattern's chance of recurring reaches a threshold, say so on the chosen
channels (models/alerts.py)."""
import re

import marshmallow as ma
from flask import current_app, url_for
from flask.views import MethodView

from app.api import SPACE, Blueprint, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import list_schema
from blueprints.grouping_rules import StrictBoolean, StrictInteger
from blueprints.tokens import whole_list
from models import AlertRule
from models.alerts import CHANNEL_TYPES, MAX_RULES, SLACK_PREFIX
from models.rates import WINDOWS

blp = Blueprint("alerts", __name__, url_prefix="/v1", protector=protector,
                description="Alert rules: a pattern whose chance of recurring reaches the threshold fires the "
                            "rule once, on each of its channels, until it falls back below the threshold.")

Length = ma.validate.Length
ID_FORMAT = r"^[a-z]{2,10}_[0-9A-Za-z]{1,36}$"
SCOPE = ma.validate.Regexp(r"^(global|pattern:pat_[0-9A-Za-z]{1,36})$",
                           error='Must be "global" or "pattern:<pattern id>".')
CHANNEL_FIELDS = {"in_app": (), "webhook": ("endpoint_id",), "slack": ("url",), "email": ("to",)}
URL_TAIL = rf"[^{SPACE}\x00-\x1f\x7f-\x9f]*$"
LOOPBACK_URL = re.compile(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?/" + URL_TAIL)


class SlackUrl(ma.validate.Regexp):
    """Slack's incoming-webhook URLs (the pattern the document shows); with
    WEBHOOKS_ALLOW_INSECURE (development only) also an http URL on loopback, a local stand-in."""

    def __init__(self):
        super().__init__("^" + SLACK_PREFIX.replace(".", r"\.") + URL_TAIL,
                         error=f"Must be a Slack incoming-webhook URL ({SLACK_PREFIX}…).")

    def __call__(self, value):
        if current_app.config["WEBHOOKS_ALLOW_INSECURE"] and LOOPBACK_URL.match(value):
            return value
        return super().__call__(value)


class StrictFloat(ma.fields.Float):
    """A JSON number (not a string or true/false)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class ThresholdSchema(ma.Schema):
    probability = StrictFloat(required=True, validate=ma.validate.Range(0, 1), metadata={"minimum": 0, "maximum": 1})
    window_days = StrictInteger(required=True, validate=ma.validate.OneOf(list(WINDOWS.values())))


class ChannelSchema(ma.Schema):
    # Each type takes exactly its own fields (fields_of_its_type), as the document says.
    OPENAPI_RULES = {"oneOf": [
        {"properties": {"type": {"const": kind}}, "required": list(fields),
         "not": {"anyOf": [{"required": [other]} for other in ("endpoint_id", "url", "to") if other not in fields]}}
        for kind, fields in CHANNEL_FIELDS.items()]}
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(CHANNEL_TYPES), metadata={
        "description": "in_app: the members' notification feed. webhook: a registered outbound endpoint "
                       "(endpoint_id) of the workspace, sent `alert.fired` whatever it subscribes to. slack: an "
                       "incoming-webhook URL (url). email: addresses (to). The worker sends the outside "
                       "channels, retrying each on the webhooks' schedule."})
    endpoint_id = ma.fields.String(validate=ma.validate.Regexp(ID_FORMAT))
    url = ma.fields.String(validate=[Length(max=2048), SlackUrl()])
    to = ma.fields.List(ma.fields.Email(validate=Length(max=320)), validate=Length(1, 10))

    @ma.validates_schema
    def fields_of_its_type(self, data, **kwargs):
        wanted = CHANNEL_FIELDS.get(data.get("type"), ())
        for name in ("endpoint_id", "url", "to"):
            if name in wanted and name not in data:
                raise ma.ValidationError(f"Required for a {data['type']} channel.", name)
            if name not in wanted and name in data:
                raise ma.ValidationError(f"Not used by a {data.get('type')} channel.", name)


class AlertRuleSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "alr_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    name = ma.fields.String(required=True)
    scope = ma.fields.String(required=True, metadata={"example": "pattern:pat_01xyz789"})
    threshold = ma.fields.Nested(ThresholdSchema, required=True)
    channels = ma.fields.List(ma.fields.Nested(ChannelSchema), required=True)
    enabled = ma.fields.Boolean(required=True)
    snoozed_until = Timestamp(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class AlertRuleUpdateSchema(ma.Schema):
    OPENAPI_RULES = {"minProperties": 1}
    name = ma.fields.String(validate=Length(1, 100))
    scope = ma.fields.String(validate=SCOPE, metadata={"description": "global, or pattern:<pattern id>."})
    threshold = ma.fields.Nested(ThresholdSchema)
    channels = ma.fields.List(ma.fields.Nested(ChannelSchema), validate=Length(1, 10))
    enabled = StrictBoolean()
    snoozed_until = Timestamp(allow_none=True, metadata={"description": "Quiet until then; null: not snoozed."})

    @ma.validates_schema
    def at_least_one(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Give at least one field to change.")


class AlertRuleCreateSchema(AlertRuleUpdateSchema):
    name = ma.fields.String(required=True, validate=Length(1, 100))
    scope = ma.fields.String(load_default="global", validate=SCOPE, metadata={
        "description": "global (default), or pattern:<pattern id>."})
    threshold = ma.fields.Nested(ThresholdSchema, required=True)
    channels = ma.fields.List(ma.fields.Nested(ChannelSchema), required=True, validate=Length(1, 10))


AlertRuleListSchema = list_schema(AlertRuleSchema, "AlertRuleList")


@blp.route("/alert-rules")
class AlertRules(MethodView):
    @blp.auth_required("alerts:read")
    @blp.response(200, AlertRuleListSchema)
    def get(self):
        """List the workspace's alert rules, oldest first."""
        query = AlertRule.in_workspace(current_principal().workspace_id).order_by(AlertRule.created_at, AlertRule.id)
        return whole_list(query, MAX_RULES)

    @blp.auth_required("alerts:write")
    @blp.idempotent
    @blp.arguments(AlertRuleCreateSchema)
    @blp.response(201, AlertRuleSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.errors(422)
    def post(self, body):
        """Create an alert rule; it is evaluated at once against the current predictions."""
        principal = current_principal()
        rule = AlertRule.create_in(principal.workspace_id, body, created_by=principal.user_id)
        return rule, {"Location": url_for("alerts.AlertRuleById", alert_rule_id=rule.id)}


@blp.route('/alert-rules/<id("alr"):alert_rule_id>')
class AlertRuleById(MethodView):
    @blp.auth_required("alerts:read")
    @blp.response(200, AlertRuleSchema)
    @blp.errors(404)
    def get(self, alert_rule_id):
        """Fetch one alert rule."""
        return AlertRule.get_in_workspace(alert_rule_id, current_principal().workspace_id)

    @blp.auth_required("alerts:write")
    @blp.arguments(AlertRuleUpdateSchema)
    @blp.response(200, AlertRuleSchema)
    @blp.errors(404, 422)
    def patch(self, changes, alert_rule_id):
        """Change, enable, disable or snooze an alert rule."""
        return AlertRule.update_in(alert_rule_id, current_principal().workspace_id, changes)

    @blp.auth_required("alerts:write")
    @blp.response(204)
    @blp.errors(404)
    def delete(self, alert_rule_id):
        """Delete an alert rule."""
        AlertRule.delete_in(alert_rule_id, current_principal().workspace_id)
