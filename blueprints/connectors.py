"""Connectors: the workspace's inbound webhook sources, each with its own URL and signing secret."""
import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from app.api import Blueprint, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import list_schema
from blueprints.tokens import whole_list
from models import Connector
from models.connectors import CONNECTOR_TYPES, MAX_CONNECTORS

blp = Blueprint("connectors", __name__, url_prefix="/v1/connectors", protector=protector,
                description="Inbound webhook connectors: paste a connector's URL and secret into Sentry, "
                            "PagerDuty, GitHub, Alertmanager or Grafana, Datadog, Jira or your own sender, "
                            "and its failures become issues. Managed only with a signed-in member's access "
                            "token, never with an API token.")

Length = ma.validate.Length
ADMIN = "connectors:admin"
PRINTABLE = ma.validate.Regexp(r"^[\x21-\x7e]+$", error="Must be printable ASCII without spaces.")


class ConnectorSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "con_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(CONNECTOR_TYPES))
    display_name = ma.fields.String(required=True, metadata={"example": "Production Alertmanager"})
    enabled = ma.fields.Boolean(required=True, metadata={"description": "A disabled connector's deliveries are 401s."})
    inbound_url = ma.fields.Function(
        lambda connector: url_for("inbound.receive", connector_id=connector.id, _external=True),
        required=True, metadata={"description": "Where the tool sends its webhooks (no bearer token: the "
                                                "signature authenticates them).", "type": "string"})
    secret_last_four = ma.fields.String(required=True, metadata={
        "description": "The current secret's last four characters, for telling secrets apart."})
    previous_secret_valid_until = Timestamp(required=True, allow_none=True, metadata={
        "description": "After a rotation, until when the previous secret still verifies; else null."})
    created_by = ma.fields.String(attribute="created_by_id", required=True, allow_none=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class ConnectorWithSecretSchema(ConnectorSchema):
    secret = ma.fields.String(required=True, metadata={
        "description": "The signing secret, shown only in this response: paste it into the tool now.",
        "example": "whsec_Xq3vR0s9mWc2bN7kLp4tY8uZa1dF6gHj5eQ0iO2rS3w"})


class ConnectorSecretSchema(ma.Schema):
    secret = ma.fields.String(validate=[Length(16, 200), PRINTABLE], metadata={
        "description": "The tool's own signing secret, for tools that mint it themselves (Sentry's client "
                       "secret, a PagerDuty webhook subscription's secret). Default: a new random "
                       "`whsec_` secret."})


class ConnectorCreateSchema(ConnectorSecretSchema):
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(CONNECTOR_TYPES), metadata={
        "description": "The sending tool; `alertmanager` also takes Grafana's webhook contact point."})
    display_name = ma.fields.String(required=True, validate=Length(1, 100), metadata={
        "description": "Unique in the workspace."})


class ConnectorUpdateSchema(ma.Schema):
    display_name = ma.fields.String(validate=Length(1, 100), metadata={"description": "Unique in the workspace."})
    enabled = ma.fields.Boolean()


ConnectorListSchema = list_schema(ConnectorSchema, "ConnectorList")


@blp.route("")
class Connectors(MethodView):
    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(200, ConnectorListSchema)
    def get(self):
        """List the workspace's connectors, by name (never their secrets)."""
        return whole_list(Connector.listed(current_principal().workspace_id), MAX_CONNECTORS)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.arguments(ConnectorCreateSchema)
    @blp.response(201, ConnectorWithSecretSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.errors(409, 422)
    def post(self, body):
        """Create a connector: its inbound URL, and its signing secret (shown this once)."""
        principal = current_principal()
        connector = Connector.create_in(principal.workspace_id, body, created_by=principal.user_id)
        return connector, {"Location": url_for("connectors.ConnectorById", connector_id=connector.id)}


@blp.route('/<id("con"):connector_id>')
class ConnectorById(MethodView):
    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(200, ConnectorSchema)
    @blp.errors(404)
    def get(self, connector_id):
        """Fetch one connector."""
        return Connector.get_in_workspace(connector_id, current_principal().workspace_id)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.arguments(ConnectorUpdateSchema)
    @blp.response(200, ConnectorSchema)
    @blp.errors(404, 409)
    def patch(self, changes, connector_id):
        """Rename a connector, or disable it (its deliveries are then refused) and enable it again."""
        return Connector.update_in(connector_id, current_principal().workspace_id, changes)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(204)
    @blp.errors(404)
    def delete(self, connector_id):
        """Delete a connector: its URL refuses deliveries at once."""
        Connector.delete_in(connector_id, current_principal().workspace_id)


@blp.route('/<id("con"):connector_id>/rotate', methods=["POST"])
@blp.auth_required(ADMIN, members_only=True)
@blp.arguments(ConnectorSecretSchema)
@blp.response(200, ConnectorWithSecretSchema)
@blp.errors(404)
def rotate(body, connector_id):
    """Give a connector a new secret (shown this once); the previous one keeps verifying for 24 h."""
    return Connector.rotate_in(connector_id, current_principal().workspace_id, body.get("secret"))
