"""A workspace's members (roles, removal) and invitations to join it."""
import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from app import mail
from app.api import Blueprint, Timestamp
from app.auth import current_principal, start_session
from app.extensions import protector
from app.pagination import list_schema
from blueprints.auth import TokenSchema, invalid_grant, verify_invitee
from blueprints.tokens import whole_list
from models import ROLES, Invitation, Workspace
from models import members as membership
from models.members import InvitationRefused

blp = Blueprint("members", __name__, url_prefix="/v1", protector=protector,
                description="Members, their roles, and invitations. Nobody grants, changes or removes a role "
                            "above their own; a workspace always keeps a tenant admin or owner.")

Length = ma.validate.Length
MOST_LISTED = 1000
Role = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLES), metadata={
    "description": "Lowest to highest: " + ", ".join(ROLES) + ". Each role holds the scopes of those below it."})


class MemberSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "mem_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    user_id = ma.fields.String(required=True)
    name = ma.fields.Function(lambda member: member.user.name, required=True, allow_none=True)
    email = ma.fields.Function(lambda member: member.user.email, required=True, allow_none=True)
    role = ma.fields.String(required=True)
    status = ma.fields.Constant("active", required=True, metadata={"description": "Always `active` for now."})
    joined_at = Timestamp(attribute="created_at", required=True)


class MemberUpdateSchema(ma.Schema):
    role = Role


class InvitationSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "inv_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    email = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(("pending", "expired", "accepted")))
    invited_by = ma.fields.String(attribute="invited_by_id", required=True, allow_none=True)
    created_at = Timestamp(required=True)
    expires_at = Timestamp(required=True, metadata={"description": "When its newest link stops working."})
    accepted_at = Timestamp(required=True, allow_none=True)


class InvitationSentSchema(InvitationSchema):
    accept_url = ma.fields.String(required=True, metadata={
        "description": "The link for the invitee (valid 7 days, once): share it. Shown only in this response."})
    emailed = ma.fields.Boolean(required=True, metadata={"description": "Whether it was emailed (SMTP_URL set)."})


class InvitationCreateSchema(ma.Schema):
    email = ma.fields.Email(required=True, validate=Length(3, 320))
    role = Role


class AcceptSchema(ma.Schema):
    token = ma.fields.String(required=True, validate=Length(1, 200), metadata={
        "description": "The token from the invitation link."})
    subject_token = ma.fields.String(required=True, validate=Length(1, 16384), metadata={
        "description": "The invitee's Clerk session JWT; its `email` claim must be the invited address."})


MemberListSchema = list_schema(MemberSchema, "MemberList")
InvitationListSchema = list_schema(InvitationSchema, "InvitationList")


def _sent(invitation):
    """The invitation with its link, emailed when SMTP_URL is set (after commit)."""
    invitation.accept_url = f"{current_app.config['INVITATION_URL']}?token={invitation.token}"
    workspace = Workspace.get_by_id(invitation.workspace_id)
    invitation.emailed = mail.send_invitation(invitation, workspace.name, invitation.accept_url)
    return invitation


@blp.route("/members")
@blp.auth_required("members:read")
@blp.response(200, MemberListSchema)
def list_members():
    """List the workspace's members, oldest first (one page, at most 1,000)."""
    return whole_list(membership.members(current_principal().workspace_id), MOST_LISTED)


@blp.route('/members/<id("mem"):member_id>')
class MemberById(MethodView):
    @blp.auth_required("members:admin")
    @blp.arguments(MemberUpdateSchema)
    @blp.response(200, MemberSchema)
    @blp.errors(404, 422)
    def patch(self, changes, member_id):
        """Change a member's role (effective from their next request); 422 `last_admin` for the last admin."""
        principal = current_principal()
        return membership.change_role(member_id, principal.workspace_id, changes["role"], principal.user_id)

    @blp.auth_required("members:admin")
    @blp.response(204)
    @blp.errors(404, 422)
    def delete(self, member_id):
        """Remove a member: their sessions and personal API tokens here stop working at once."""
        principal = current_principal()
        membership.remove_member(member_id, principal.workspace_id, principal.user_id)


@blp.route("/invitations")
class Invitations(MethodView):
    @blp.auth_required("members:write")
    @blp.response(200, InvitationListSchema)
    def get(self):
        """List invitations (pending, expired, accepted), newest first (one page, at most 1,000)."""
        return whole_list(Invitation.listed(current_principal().workspace_id), MOST_LISTED)

    @blp.auth_required("members:write")
    @blp.arguments(InvitationCreateSchema)
    @blp.response(201, InvitationSentSchema)
    @blp.errors(409)
    def post(self, body):
        """Invite someone by email, with a role no higher than yours; the response holds their link."""
        principal = current_principal()
        invitation = Invitation.invite(principal.workspace_id, body["email"], body["role"], principal.user_id)
        return _sent(invitation)


@blp.route('/invitations/<id("inv"):invitation_id>', methods=["DELETE"])
@blp.auth_required("members:write")
@blp.response(204)
@blp.errors(404, 422)
def revoke_invitation(invitation_id):
    """Revoke an invitation that has not been accepted: none of its links works any more."""
    principal = current_principal()
    Invitation.revoke(invitation_id, principal.workspace_id, principal.user_id)


@blp.route('/invitations/<id("inv"):invitation_id>/resend', methods=["POST"])
@blp.auth_required("members:write")
@blp.response(200, InvitationSentSchema)
@blp.errors(404, 422)
def resend_invitation(invitation_id):
    """Send a fresh link (valid 7 days); earlier links stay valid until they expire."""
    principal = current_principal()
    return _sent(Invitation.resend(invitation_id, principal.workspace_id, principal.user_id))


@blp.route("/invitations/accept", methods=["POST"])
@blp.arguments(AcceptSchema)
@blp.response(200, TokenSchema)
@blp.errors(401, 403, 409, 503)
def accept_invitation(body):
    """Accept an invitation as the signed-in Clerk user it was sent to; returns a token pair for it."""
    identity = verify_invitee(body["subject_token"])
    try:
        member = Invitation.accept(body["token"], identity)
    except InvitationRefused as refusal:
        raise invalid_grant(str(refusal)) from None
    return start_session(member.user_id, member.workspace_id, member.scopes)
