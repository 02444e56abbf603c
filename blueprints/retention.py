"""The workspace's data-retention settings (applied by `flask prune`)."""
import marshmallow as ma
from flask.views import MethodView

from app.api import Blueprint
from app.auth import current_principal
from app.extensions import protector
from blueprints.grouping_rules import StrictInteger
from models import RetentionSettings
from models.retention import AUDIT_MINIMUM_DAYS

blp = Blueprint("retention", __name__, url_prefix="/v1", protector=protector,
                description="How long the workspace keeps its data; `flask prune` deletes what has expired.")

MAX_DAYS = 36500


def _days(description, **kwargs):
    return StrictInteger(allow_none=True, validate=ma.validate.Range(1, MAX_DAYS),
                         metadata={"description": description + " Null keeps it forever."}, **kwargs)


ISSUES = "Issues last changed longer ago than this are deleted."
ACTIVITY = "Sign-in sessions that are over (signed out or lapsed) and started longer ago are deleted."
AUDIT = (f"Audit entries older than this are deleted; at least {AUDIT_MINIMUM_DAYS} (less is a 422 "
         "`retention_below_minimum`).")


class RetentionSchema(ma.Schema):
    issues_days = _days(ISSUES, required=True)
    activity_days = _days(ACTIVITY, required=True)
    audit_days = _days(AUDIT, required=True)


class RetentionUpdateSchema(ma.Schema):
    OPENAPI_RULES = {"minProperties": 1}
    issues_days = _days(ISSUES)
    activity_days = _days(ACTIVITY)
    audit_days = _days(AUDIT)

    @ma.validates_schema
    def names_a_field(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Give at least one of issues_days, activity_days and audit_days.")


@blp.route("/settings/data-retention")
class DataRetention(MethodView):
    @blp.auth_required("workspace.compliance:read")
    @blp.response(200, RetentionSchema)
    def get(self):
        """How long the workspace keeps its issues, sign-in activity and audit log."""
        return RetentionSettings.of(current_principal().workspace_id)

    @blp.auth_required("workspace.compliance:write")
    @blp.arguments(RetentionUpdateSchema)
    @blp.response(200, RetentionSchema)
    @blp.errors(422)
    def patch(self, changes):
        """Change how long data is kept (the fields given); applied by the next prune."""
        return RetentionSettings.change(current_principal().workspace_id, changes)
