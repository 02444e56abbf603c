"""Sign-in: exchange a Clerk session for Causeloop tokens, refresh, revoke, and who am I."""
import marshmallow as ma
from flask import current_app

from app import clerk
from app.api import Blueprint, Timestamp
from app.auth import current_principal, grant_tokens, start_session
from app.errors import ApiError
from app.extensions import protector
from models import Membership, RefreshToken, User, Workspace

blp = Blueprint("auth", __name__, url_prefix="/v1", protector=protector,
                description="Token exchange, refresh and revocation.")

MOCK_USER_ID = "usr_01abc456"
MOCK_WORKSPACE_ID = "ws_01abc123"


class ExchangeSchema(ma.Schema):
    subject_token = ma.fields.String(
        required=True, validate=ma.validate.Length(min=1, max=16384),
        metadata={"description": "A Clerk session JWT."})
    workspace_id = ma.fields.String(
        validate=ma.validate.Length(min=1, max=40),
        metadata={"description": "Sign in to this one of your workspaces (see GET /v1/me); default: the "
                                 "active Clerk organization's, or your only one."})


class RefreshSchema(ma.Schema):
    refresh_token = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=512))


class TokenSchema(ma.Schema):
    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String(required=True)
    token_type = ma.fields.String(required=True, metadata={"example": "bearer"})
    expires_in = ma.fields.Integer(required=True, metadata={"example": 259200})
    scope = ma.fields.String(required=True)
    workspace_id = ma.fields.String(required=True)


class RevokedSchema(ma.Schema):
    revoked = ma.fields.Boolean(required=True)


class UserSchema(ma.Schema):
    id = ma.fields.String(required=True)
    email = ma.fields.String(allow_none=True)
    name = ma.fields.String(allow_none=True)
    created_at = Timestamp(required=True)


class WorkspaceSchema(ma.Schema):
    id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    organization_id = ma.fields.String(required=True)
    created_at = Timestamp(required=True)


class MyWorkspaceSchema(WorkspaceSchema):
    role = ma.fields.String(required=True, metadata={"description": "Your role there."})


class MeSchema(ma.Schema):
    user = ma.fields.Nested(UserSchema, required=True)
    workspace = ma.fields.Nested(WorkspaceSchema, required=True)
    role = ma.fields.String(required=True)
    scopes = ma.fields.List(ma.fields.String(), required=True)
    workspaces = ma.fields.List(ma.fields.Nested(MyWorkspaceSchema), required=True, metadata={
        "description": "Every workspace you belong to, with your role; sign in to another with "
                       "POST /v1/auth/exchange's `workspace_id`."})


def invalid_grant(message):
    return ApiError(401, message, code="invalid_grant")


def verify_subject_token(subject_token, workspace_id=None):
    """The Clerk session's (user id, workspace id); raises invalid_grant when it is refused."""
    if current_app.config["USE_MOCK"]:
        return MOCK_USER_ID, workspace_id or MOCK_WORKSPACE_ID
    try:
        return clerk.sign_in(subject_token, workspace_id)
    except clerk.SignInRefused as refusal:
        raise invalid_grant(str(refusal)) from None


def verify_invitee(subject_token):
    """Who the Clerk session proves the caller is ({user_id | clerk_user_id, email, name}),
    checked exactly as the exchange checks it (the mock user, in mock mode)."""
    if current_app.config["USE_MOCK"]:
        user = User.get_by_id(MOCK_USER_ID)
        return {"user_id": user.id, "email": user.email, "name": user.name}
    try:
        return clerk.invitee(subject_token)
    except clerk.SignInRefused as refusal:
        raise invalid_grant(str(refusal)) from None


@blp.route("/auth/exchange", methods=["POST"])
@blp.arguments(ExchangeSchema)
@blp.response(200, TokenSchema)
@blp.errors(401, 503)
def exchange(body):
    """Exchange a Clerk session JWT for a Causeloop access and refresh token."""
    user_id, workspace_id = verify_subject_token(body["subject_token"], body.get("workspace_id"))
    membership = Membership.find(user_id, workspace_id)
    if membership is None:
        raise invalid_grant("The signed-in user is not a member of that workspace")
    return start_session(user_id, workspace_id, membership.scopes)


@blp.route("/auth/refresh", methods=["POST"])
@blp.arguments(RefreshSchema)
@blp.response(200, TokenSchema)
@blp.errors(401, 503)
def refresh(body):
    """Trade a refresh token for a new token pair; the old refresh token stops working."""
    session, token_or_reason = RefreshToken.rotate(body["refresh_token"],
                                                   current_app.config["REFRESH_TOKEN_TTL_S"])
    if session is None:
        raise invalid_grant(token_or_reason[0].upper() + token_or_reason[1:])
    return {**grant_tokens(session), "refresh_token": token_or_reason}


@blp.route("/auth/revoke", methods=["POST"])
@blp.arguments(RefreshSchema)
@blp.response(200, RevokedSchema)
@blp.errors(503)
def revoke(body):
    """Log out: revoke the refresh token's whole session (always 200 for a well-formed body)."""
    row = RefreshToken.lookup(body["refresh_token"])
    if row is not None:
        row.session.sign_out()
    return {"revoked": True}


@blp.route("/me")
@blp.auth_required()
@blp.response(200, MeSchema)
@blp.errors(403)
def me():
    """The caller: user, workspace, role, the scopes this token may use, and all their workspaces."""
    token = current_principal()
    if token.user_id is None:
        raise ApiError(403, "A service account is no one: /v1/me describes members (sessions and personal tokens)")
    memberships = Membership.of_user(token.user_id).select(Membership, Workspace).join(Workspace)
    workspaces = [{"id": m.workspace.id, "name": m.workspace.name, "organization_id": m.workspace.organization_id,
                   "created_at": m.workspace.created_at, "role": m.role} for m in memberships]
    role = next((w["role"] for w in workspaces if w["id"] == token.workspace_id), None)
    if role is None:  # removed since the token was checked
        raise ApiError(401, "The access token is invalid, expired or revoked")
    return {"user": User.get_by_id(token.user_id), "workspace": Workspace.get_by_id(token.workspace_id),
            "role": role, "scopes": token.scopes, "workspaces": workspaces}
