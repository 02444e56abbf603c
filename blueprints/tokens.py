"""API tokens (a member's own) and service accounts (a workspace's machine identities, with theirs)."""
import datetime
import re

import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from app.api import Blueprint, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import list_schema
from blueprints.grouping_rules import StrictInteger
from models import ApiToken, ServiceAccount, utcnow
from models.tokens import (MAX_CIDRS, MAX_LIFETIME_DAYS, MAX_SERVICE_ACCOUNTS, MAX_TOKENS_PER_OWNER,
                           SCOPE_DESCRIPTIONS, TOKEN_SCOPES, normalise_cidr)

blp = Blueprint("tokens", __name__, url_prefix="/v1", protector=protector,
                description="API tokens for scripts and CI: personal ones act for their member; service "
                            "accounts are the workspace's own machine identities. Managed only with a "
                            "signed-in member's access token, never with an API token.")

Length = ma.validate.Length
ADMIN = "tokens:admin"


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HEX = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join([rf"(?:{_HEX}:){{7}}{_HEX}", rf"(?:{_HEX}:){{1,7}}:"] + [
    rf"(?:{_HEX}:){{1,{6 - tail}}}(?::{_HEX}){{1,{tail + 1}}}" for tail in range(6)] + [rf":(?:(?::{_HEX}){{1,7}}|:)"])
CIDR_PATTERN = (rf"^(?:{_OCTET}(?:\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?[0-9]))?"
                rf"|(?:{_IPV6})(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$")


class Cidr(ma.fields.String):
    """An IPv4 or IPv6 network (`203.0.113.0/24`) or one address, kept as its network: the
    document's `pattern` is the expression checked (dotted quads, colon-hex IPv6, a prefix)."""

    def __init__(self, **kwargs):
        super().__init__(metadata={"pattern": CIDR_PATTERN}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            if not re.search(CIDR_PATTERN, text):  # as JSON Schema reads `pattern`
                raise ValueError(text)
            return normalise_cidr(text)
        except ValueError:
            raise ma.ValidationError("Not an IP address or network in CIDR notation (e.g. 203.0.113.0/24).") from None


class ApiTokenSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "tok_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    name = ma.fields.String(required=True, metadata={"example": "GitHub Actions ingest"})
    scopes = ma.fields.List(ma.fields.String(), required=True)
    allowed_cidrs = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "Networks the token is accepted from; empty: any."})
    last_four = ma.fields.String(required=True, metadata={"description": "The secret's last four characters."})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(("active", "expired")))
    created_at = Timestamp(required=True)
    expires_at = Timestamp(required=True)
    last_used_at = Timestamp(required=True, allow_none=True, metadata={
        "description": "To the minute: recorded at most once a minute."})


class ApiTokenCreatedSchema(ApiTokenSchema):
    token = ma.fields.String(attribute="secret", required=True, metadata={
        "description": "The secret, shown only in this response: store it now.",
        "example": "clp_pat_3Fq8ZkQ0pX7mB2rT9wLc4NvY6hJd1sKe0aB9c2"})


class ApiTokenCreateSchema(ma.Schema):
    OPENAPI_RULES = {"oneOf": [{"required": ["expires_at"]}, {"required": ["expires_in_days"]}]}

    name = ma.fields.String(required=True, validate=Length(1, 100), metadata={
        "description": "Unique among the owner's tokens."})
    scopes = ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(TOKEN_SCOPES)), required=True,
                            validate=Length(1, len(TOKEN_SCOPES)), metadata={
                                "description": "At most what your role grants today (else 403). See "
                                               "GET /v1/api-tokens/scopes."})
    expires_at = Timestamp(metadata={"description": "Give this or `expires_in_days`: in the future, "
                                                    f"at most {MAX_LIFETIME_DAYS} days away."})
    expires_in_days = StrictInteger(validate=ma.validate.Range(1, MAX_LIFETIME_DAYS))
    allowed_cidrs = ma.fields.List(Cidr(validate=Length(1, 64)), validate=Length(max=MAX_CIDRS), metadata={
        "description": "Accept the token only from these networks (IPv4/IPv6 CIDR). Default: anywhere."})

    @ma.validates_schema
    def one_expiry(self, data, **kwargs):
        given = [name for name in ("expires_at", "expires_in_days") if data.get(name) is not None]
        if len(given) != 1:
            raise ma.ValidationError("Give exactly one of expires_at and expires_in_days.", "expires_at")
        expires_at = data.get("expires_at")
        if expires_at is not None:
            now = utcnow()
            if expires_at <= now:
                raise ma.ValidationError("Must be in the future.", "expires_at")
            if expires_at > now + datetime.timedelta(days=MAX_LIFETIME_DAYS):
                raise ma.ValidationError(f"Must be at most {MAX_LIFETIME_DAYS} days away.", "expires_at")


class ScopeSchema(ma.Schema):
    scope = ma.fields.String(required=True, metadata={"example": "ingest:write"})
    description = ma.fields.String(required=True)
    grantable = ma.fields.Boolean(required=True, metadata={"description": "Whether a token may hold it."})


class ScopeCatalogueSchema(ma.Schema):
    data = ma.fields.List(ma.fields.Nested(ScopeSchema), required=True)


class ServiceAccountSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "sva_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    name = ma.fields.String(required=True, metadata={"example": "ci-deploy"})
    description = ma.fields.String(required=True)
    created_by = ma.fields.String(attribute="created_by_id", required=True, allow_none=True, metadata={
        "description": "The user who made it, for the record (null once that user is deleted); the account "
                       "does not depend on them."})
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)
    tokens = ma.fields.List(ma.fields.Nested(ApiTokenSchema), required=True, metadata={
        "description": f"Its tokens (at most {MAX_TOKENS_PER_OWNER}), oldest first."})


class ServiceAccountUpdateSchema(ma.Schema):
    name = ma.fields.String(validate=Length(1, 100), metadata={"description": "Unique in the workspace."})
    description = ma.fields.String(validate=Length(max=1000))


class ServiceAccountCreateSchema(ServiceAccountUpdateSchema):
    name = ma.fields.String(required=True, validate=Length(1, 100), metadata={"description": "Unique in the workspace."})


ApiTokenListSchema = list_schema(ApiTokenSchema, "ApiTokenList")
ServiceAccountListSchema = list_schema(ServiceAccountSchema, "ServiceAccountList")


def whole_list(query, most):
    """A short list (its size is capped where it is written) as one complete page."""
    items = list(query.limit(most))
    return {"data": items, "page": {"next_cursor": None, "has_more": False, "total": len(items)}}


@blp.route("/api-tokens")
class ApiTokens(MethodView):
    @blp.auth_required(members_only=True)
    @blp.response(200, ApiTokenListSchema)
    def get(self):
        """List your personal tokens in this workspace, oldest first (never their secrets)."""
        principal = current_principal()
        return whole_list(ApiToken.personal(principal.user_id, principal.workspace_id), MAX_TOKENS_PER_OWNER)

    @blp.auth_required(members_only=True)
    @blp.arguments(ApiTokenCreateSchema)
    @blp.response(201, ApiTokenCreatedSchema)
    @blp.links(201, "/v1/api-tokens/{token_id}", ["delete"], token_id="$response.body#/id")
    @blp.links(201, "/v1/api-tokens/{token_id}/rotate", ["post"], token_id="$response.body#/id")
    @blp.errors(409, 422)
    def post(self, body):
        """Create a personal token: it acts for you, with no more than your role grants."""
        principal = current_principal()
        return ApiToken.create_personal(principal.user_id, principal.workspace_id, body, principal.scopes)


@blp.route("/api-tokens/scopes")
@blp.auth_required()
@blp.response(200, ScopeCatalogueSchema)
def scope_catalogue():
    """Every scope, what it allows, and whether a token may hold it."""
    return {"data": [{"scope": scope, "description": description, "grantable": scope in TOKEN_SCOPES}
                     for scope, description in SCOPE_DESCRIPTIONS.items()]}


@blp.route('/api-tokens/<id("tok"):token_id>/rotate', methods=["POST"])
@blp.auth_required(members_only=True)
@blp.response(200, ApiTokenCreatedSchema)
@blp.errors(404, 422)
def rotate(token_id):
    """Give one of your tokens a new secret; the old secret stops working at once."""
    principal = current_principal()
    return ApiToken.rotate_personal(token_id, principal.user_id, principal.workspace_id)


@blp.route('/api-tokens/<id("tok"):token_id>', methods=["DELETE"])
@blp.auth_required(members_only=True)
@blp.response(204)
@blp.errors(404)
def revoke(token_id):
    """Revoke one of your tokens: it stops working at once."""
    principal = current_principal()
    ApiToken.revoke_personal(token_id, principal.user_id, principal.workspace_id)


@blp.route("/service-accounts")
class ServiceAccounts(MethodView):
    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(200, ServiceAccountListSchema)
    def get(self):
        """List the workspace's service accounts, by name, with their tokens."""
        return whole_list(ServiceAccount.listed(current_principal().workspace_id), MAX_SERVICE_ACCOUNTS)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.idempotent
    @blp.arguments(ServiceAccountCreateSchema)
    @blp.response(201, ServiceAccountSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.links(201, "/v1/service-accounts/{account_id}", ["get", "patch", "delete"],
               account_id="$response.body#/id")
    @blp.errors(422)
    def post(self, body):
        """Create a service account: a machine identity of the workspace, owned by no member."""
        principal = current_principal()
        account = ServiceAccount.create_in(principal.workspace_id, body, created_by=principal.user_id)
        return account, {"Location": url_for("tokens.ServiceAccountById", account_id=account.id)}


@blp.route('/service-accounts/<id("sva"):account_id>')
class ServiceAccountById(MethodView):
    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(200, ServiceAccountSchema)
    @blp.errors(404)
    def get(self, account_id):
        """Fetch one service account with its tokens."""
        return ServiceAccount.get_in_workspace(account_id, current_principal().workspace_id)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.arguments(ServiceAccountUpdateSchema)
    @blp.response(200, ServiceAccountSchema)
    @blp.errors(404, 409)
    def patch(self, changes, account_id):
        """Rename or describe a service account."""
        return ServiceAccount.update_in(account_id, current_principal().workspace_id, changes)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(204)
    @blp.errors(404)
    def delete(self, account_id):
        """Delete a service account; its tokens stop working at once."""
        ServiceAccount.delete_in(account_id, current_principal().workspace_id)


@blp.route('/service-accounts/<id("sva"):account_id>/tokens', methods=["POST"])
@blp.auth_required(ADMIN, members_only=True)
@blp.arguments(ApiTokenCreateSchema)
@blp.response(201, ApiTokenCreatedSchema)
@blp.errors(404, 409, 422)
def create_service_account_token(body, account_id):
    """Create a token for a service account; it keeps working whoever leaves the workspace."""
    principal = current_principal()
    return ApiToken.create_for_service_account(account_id, principal.workspace_id, body, principal.scopes,
                                               created_by=principal.user_id)


@blp.route('/service-accounts/<id("sva"):account_id>/tokens/<id("tok"):token_id>', methods=["DELETE"])
@blp.auth_required(ADMIN, members_only=True)
@blp.response(204)
@blp.errors(404)
def revoke_service_account_token(account_id, token_id):
    """Revoke a service account's token: it stops working at once."""
    ApiToken.revoke_for_service_account(token_id, account_id, current_principal().workspace_id)
