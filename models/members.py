"""A workspace's members and their roles, and invitations to join it.

Every operation checks the rank rule (nobody grants, changes or removes a role above their own)
and the last-admin rule (a workspace keeps at least one tenant admin or owner) inside its
transaction, and writes its audit entry there.
"""
import datetime
import hashlib
import secrets

import peewee as pw

from . import audit, events
from .accounts import ADMIN_ROLES, AuthSession, Membership, User, Workspace, rank
from .base import BaseModel, Conflict, Forbidden, NotFound, RuleViolation, WorkspaceScoped, for_update, utcnow

INVITATION_PREFIX = "clp_inv_"
INVITATION_TTL = datetime.timedelta(days=7)


class LastAdmin(RuleViolation):
    """Removing or demoting the workspace's last tenant admin or owner (a 422 `last_admin`)."""

    code = "last_admin"


class InvitationRefused(Exception):
    """The invitation link signs no one in: unknown, expired or already used (message says which)."""


def normal_email(email):
    return email.strip().lower()


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


# -- members --------------------------------------------------------------------------------

def members(workspace_id):
    """The workspace's memberships with their users, oldest first."""
    return (Membership.select(Membership, User).join(User)
            .where(Membership.workspace == workspace_id)
            .order_by(Membership.created_at, Membership.id))


def get_member(member_id, workspace_id, lock=False):
    query = members(workspace_id).where(Membership.id == member_id)
    member = (for_update(query) if lock else query).first()
    if member is None:
        raise NotFound("Member", member_id)
    return member


def _actor_role(user_id, workspace_id):
    membership = Membership.find(user_id, workspace_id) if user_id else None
    if membership is None:  # left between the token check and now
        raise Forbidden("You are no longer a member of this workspace")
    return membership.role


def _within_rank(actor_role, *roles, verb):
    above = [role for role in roles if rank(role) > rank(actor_role)]
    if above:
        raise Forbidden(f"You cannot {verb} {above[0]}: it is above your own role ({actor_role})",
                        role=[f"Above your role ({actor_role}): {above[0]}"])


def _lock_admins(workspace_id):
    """The workspace's admin memberships, locked until commit on PostgreSQL (in id order, so two
    admins acting at once wait for each other instead of both seeing two admins)."""
    query = (Membership.select(Membership.id).where((Membership.workspace == workspace_id)
                                                    & Membership.role.in_(ADMIN_ROLES))
             .order_by(Membership.id))
    return [row.id for row in for_update(query)]


def change_role(member_id, workspace_id, role, actor_user_id):
    with events.transaction():
        admins = _lock_admins(workspace_id)
        actor_role = _actor_role(actor_user_id, workspace_id)
        member = get_member(member_id, workspace_id, lock=True)
        _within_rank(actor_role, member.role, role, verb="change a role to or from")
        if member.role == role:
            return member
        if member.role in ADMIN_ROLES and role not in ADMIN_ROLES and admins == [member.id]:
            raise LastAdmin("role", "This is the workspace's last tenant admin or owner; promote another "
                                    "member first")
        before, member.role = member.role, role
        Membership.update(role=role).where(Membership.id == member.id).execute()
        audit.record(workspace_id, "member.role_changed", "member", member.id,
                     {"user_id": member.user_id, "role": {"before": before, "after": role}})
    return member


def remove_member(member_id, workspace_id, actor_user_id):
    """End the membership and, at once, every session and personal API token it held here."""
    from .tokens import ApiToken

    with events.transaction():
        admins = _lock_admins(workspace_id)
        actor_role = _actor_role(actor_user_id, workspace_id)
        member = get_member(member_id, workspace_id, lock=True)
        _within_rank(actor_role, member.role, verb="remove a member whose role is")
        if member.role in ADMIN_ROLES and admins == [member.id]:
            raise LastAdmin("id", "This is the workspace's last tenant admin or owner; promote another "
                                  "member first")
        ended_sessions = (AuthSession.update(revoked_at=utcnow())
                          .where((AuthSession.user == member.user_id) & (AuthSession.workspace == workspace_id)
                                 & AuthSession.revoked_at.is_null()).execute())
        deleted_tokens = (ApiToken.delete().where((ApiToken.user == member.user_id)
                                                  & (ApiToken.workspace == workspace_id)).execute())
        Membership.delete().where(Membership.id == member.id).execute()
        audit.record(workspace_id, "member.removed", "member", member.id,
                     {"user_id": member.user_id, "role": {"before": member.role, "after": None},
                      "sessions_ended": ended_sessions, "api_tokens_revoked": deleted_tokens})


# -- invitations ----------------------------------------------------------------------------

class Invitation(WorkspaceScoped, BaseModel):
    """An invitation to join a workspace with a role. Its links (one per send) are stored hashed;
    any unexpired one accepts it, once."""

    KIND = "Invitation"
    ID_PREFIX = "inv"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    email = pw.CharField(max_length=320)
    role = pw.CharField(max_length=20)
    invited_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()  # its newest link's
    accepted_at = pw.DateTimeField(null=True)
    accepted_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")

    class Meta:
        indexes = ((("workspace", "email"), False),)

    @property
    def status(self):
        if self.accepted_at is not None:
            return "accepted"
        return "expired" if self.expires_at <= utcnow() else "pending"

    @classmethod
    def listed(cls, workspace_id):
        return cls.in_workspace(workspace_id).order_by(cls.created_at.desc(), cls.id.desc())

    @classmethod
    def invite(cls, workspace_id, email, role, actor_user_id):
        """A new invitation; its link's token (on `.token`, never stored) is for the invitee."""
        email = normal_email(email)
        with events.transaction():
            _within_rank(_actor_role(actor_user_id, workspace_id), role, verb="invite someone as")
            already = (members(workspace_id).where(pw.fn.LOWER(User.email) == email).exists())
            if already:
                raise Conflict(f"{email} is already a member of this workspace", email=["Already a member."])
            pending = cls.in_workspace(workspace_id).where((cls.email == email) & cls.accepted_at.is_null()
                                                           & (cls.expires_at > utcnow()))
            if pending.exists():
                raise Conflict(f"{email} already has a pending invitation; resend it instead",
                               email=["Already invited: resend the pending invitation."])
            invitation = cls.create(id=cls.next_id(), workspace=workspace_id, email=email, role=role,
                                    invited_by=actor_user_id, expires_at=utcnow() + INVITATION_TTL)
            invitation.token = InvitationLink.mint(invitation)
            audit.record(workspace_id, "invitation.sent", "invitation", invitation.id,
                         {"email": email, "role": role})
        return invitation

    @classmethod
    def resend(cls, invitation_id, workspace_id, actor_user_id):
        """A fresh link, valid 7 days; the invitation's earlier links stay valid until their own expiry."""
        with events.transaction():
            invitation = cls.get_in_workspace(invitation_id, workspace_id, lock=True)
            _within_rank(_actor_role(actor_user_id, workspace_id), invitation.role, verb="resend an invitation as")
            if invitation.accepted_at is not None:
                raise RuleViolation("id", "This invitation has been accepted already")
            invitation.expires_at = utcnow() + INVITATION_TTL
            cls.update(expires_at=invitation.expires_at).where(cls.id == invitation.id).execute()
            invitation.token = InvitationLink.mint(invitation)
            audit.record(workspace_id, "invitation.resent", "invitation", invitation.id,
                         {"email": invitation.email, "role": invitation.role})
        return invitation

    @classmethod
    def revoke(cls, invitation_id, workspace_id, actor_user_id):
        """Delete a pending (or expired) invitation: none of its links works any more."""
        with events.transaction():
            invitation = cls.get_in_workspace(invitation_id, workspace_id, lock=True)
            _within_rank(_actor_role(actor_user_id, workspace_id), invitation.role, verb="revoke an invitation as")
            if invitation.accepted_at is not None:
                raise RuleViolation("id", "This invitation has been accepted; remove the member instead")
            invitation.delete_instance()
            audit.record(workspace_id, "invitation.revoked", "invitation", invitation.id,
                         {"email": invitation.email, "role": invitation.role})

    @classmethod
    def accept(cls, token, identity):
        """Spend the link `token` for the invitee `identity` (verified: {user_id | clerk_user_id,
        email, name}). Creates the user if needed and the membership; returns the membership.
        Raises InvitationRefused, Forbidden (another email) or Conflict (already a member)."""
        with events.transaction():
            link = InvitationLink.lookup(token)
            if link is None:
                raise InvitationRefused("The invitation link is unknown or has been revoked")
            invitation = for_update(cls.select().where(cls.id == link.invitation_id)).get()
            if invitation.accepted_at is not None:
                raise InvitationRefused("The invitation has been used already")
            if link.expires_at <= utcnow():
                raise InvitationRefused("The invitation link has expired; ask for it to be resent")
            email = identity.get("email")
            if not isinstance(email, str) or normal_email(email) != invitation.email:
                raise Forbidden("The signed-in account's verified email is not the one invited",
                                email=["Does not match the invitation."])
            user = _invitee(identity)
            if Membership.find(user.id, invitation.workspace_id) is not None:
                raise Conflict("You are a member of this workspace already")
            spent = (cls.update(accepted_at=utcnow(), accepted_by=user.id)
                     .where((cls.id == invitation.id) & cls.accepted_at.is_null()).execute())
            if not spent:
                raise InvitationRefused("The invitation has been used already")
            membership = Membership.create(id=Membership.next_id(), user=user.id,
                                           workspace=invitation.workspace_id, role=invitation.role)
            audit.record(invitation.workspace_id, "invitation.accepted", "invitation", invitation.id,
                         {"email": invitation.email, "role": invitation.role, "member_id": membership.id},
                         actor=audit.user_actor(user))
        return membership


def _invitee(identity):
    """The invitee's user: theirs already (by id, or by Clerk user id), else a new one."""
    if identity.get("user_id"):
        return User.get_by_id(identity["user_id"])
    user = User.get_or_none(User.clerk_user_id == identity["clerk_user_id"])
    if user is None:
        user = User.create(id=User.next_id(), clerk_user_id=identity["clerk_user_id"],
                           email=normal_email(identity["email"]), name=identity.get("name"))
    return user


class InvitationLink(BaseModel):
    """One sent link: only the SHA-256 of its token is kept."""

    token_hash = pw.CharField(primary_key=True, max_length=64)
    invitation = pw.ForeignKeyField(Invitation, backref="links", on_delete="CASCADE")
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()

    @classmethod
    def mint(cls, invitation):
        token = INVITATION_PREFIX + secrets.token_urlsafe(32)
        cls.create(token_hash=_digest(token), invitation=invitation.id, expires_at=invitation.expires_at)
        return token

    @classmethod
    def lookup(cls, token):
        if not isinstance(token, str) or not token.startswith(INVITATION_PREFIX):
            return None
        return cls.get_or_none(cls.token_hash == _digest(token))
