"""Who may call: organizations, workspaces, users, their memberships and sign-in sessions."""
import datetime
import hashlib
import secrets

import peewee as pw

from .base import BaseModel, db, prepared_rows, utcnow

# The roles, lowest first: each holds every scope of the roles below it, plus its own. A
# member never grants (invites to, promotes to) a role above their own.
ROLES = ("read_only", "viewer", "executive", "analyst", "compliance_admin", "security_admin",
         "tenant_admin", "owner")
ROLE_GRANTS = {
    "read_only": ("issues:read", "patterns:read", "predictions:read", "alerts:read"),
    "viewer": ("members:read",),
    "executive": ("workspace.compliance:read",),
    "analyst": ("issues:write", "patterns:write", "ingest:write", "predictions:write", "alerts:write"),
    "compliance_admin": ("audit:read", "workspace.compliance:write"),
    "security_admin": ("members:write", "tokens:admin", "connectors:admin", "webhooks:admin"),
    "tenant_admin": ("members:admin", "workspace:write"),
    "owner": (),  # what a tenant admin may do, and above them: only an owner makes owners
}
# Every scope, in the order a role's scope string lists them (the quickstart's "issues:read
# issues:write patterns:read ...").
SCOPES = ("issues:read", "issues:write", "patterns:read", "patterns:write", "ingest:write", "members:read",
          "members:write", "members:admin", "audit:read", "workspace:write", "workspace.compliance:read",
          "workspace.compliance:write", "tokens:admin", "connectors:admin", "webhooks:admin", "predictions:read",
          "predictions:write", "alerts:read", "alerts:write")
ROLE_SCOPES = {}
for _index, _role in enumerate(ROLES):
    _granted = {scope for role in ROLES[:_index + 1] for scope in ROLE_GRANTS[role]}
    ROLE_SCOPES[_role] = tuple(scope for scope in SCOPES if scope in _granted)
ALL_SCOPES = ROLE_SCOPES["owner"]
ADMIN_ROLES = ("tenant_admin", "owner")  # a workspace always keeps at least one


def rank(role):
    """A role's place in the chain: higher may do everything lower may."""
    return ROLES.index(role)


REFRESH_PREFIX = "clp_refresh_"


class Organization(BaseModel):
    ID_PREFIX = "org"
    id = pw.CharField(primary_key=True, max_length=40)
    name = pw.CharField(max_length=200)
    clerk_org_id = pw.CharField(max_length=100, null=True, unique=True)
    created_at = pw.DateTimeField(default=utcnow)


class Workspace(BaseModel):
    ID_PREFIX = "ws"
    id = pw.CharField(primary_key=True, max_length=40)
    organization = pw.ForeignKeyField(Organization, backref="workspaces", on_delete="CASCADE")
    name = pw.CharField(max_length=200)
    created_at = pw.DateTimeField(default=utcnow)


class User(BaseModel):
    ID_PREFIX = "usr"
    id = pw.CharField(primary_key=True, max_length=40)
    clerk_user_id = pw.CharField(max_length=100, null=True, unique=True)
    email = pw.CharField(max_length=320, null=True)
    name = pw.CharField(max_length=200, null=True)
    created_at = pw.DateTimeField(default=utcnow)


class Membership(BaseModel):
    ID_PREFIX = "mem"
    id = pw.CharField(primary_key=True, max_length=40)
    user = pw.ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    workspace = pw.ForeignKeyField(Workspace, backref="memberships", on_delete="CASCADE")
    role = pw.CharField(max_length=20)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("user", "workspace"), True),)

    @property
    def scopes(self):
        return ROLE_SCOPES[self.role]

    @classmethod
    def find(cls, user_id, workspace_id):
        return cls.get_or_none((cls.user == user_id) & (cls.workspace == workspace_id))

    @classmethod
    def of_user(cls, user_id, clerk_org_id=None):
        """A user's memberships, oldest first; with `clerk_org_id`, only in that organization's workspaces."""
        query = cls.select().where(cls.user == user_id)
        if clerk_org_id is not None:
            query = (query.join(Workspace).join(Organization)
                     .where(Organization.clerk_org_id == clerk_org_id))
        return query.order_by(cls.created_at, cls.id)


def provision_owner(org_name, workspace_name, clerk_user_id, email, clerk_org_id=None, user_name=None):
    """Make sure an organization, its workspace and an owner exist, creating only what is missing.

    Returns {"organization" | "workspace" | "user" | "membership": (id, "created" | "updated" | "existing")}.
    """
    with db.atomic():
        org, org_state = _provision_organization(org_name, clerk_org_id)
        workspace = (Workspace.select()
                     .where((Workspace.organization == org) & (Workspace.name == workspace_name))
                     .order_by(Workspace.created_at, Workspace.id).first())
        workspace_state = "existing"
        if workspace is None:
            workspace = Workspace.create(id=Workspace.next_id(), organization=org, name=workspace_name)
            workspace_state = "created"
        user, user_state = _provision_user(clerk_user_id, email, user_name)
        membership = Membership.find(user.id, workspace.id)
        membership_state = "existing"
        if membership is None:
            membership = Membership.create(id=Membership.next_id(), user=user, workspace=workspace,
                                           role="owner")
            membership_state = "created"
        elif membership.role != "owner":
            membership.role = "owner"
            membership.save()
            membership_state = "updated"
        rows = {"organization": (org.id, org_state), "workspace": (workspace.id, workspace_state),
                "user": (user.id, user_state), "membership": (membership.id, membership_state)}
        if any(state != "existing" for _, state in rows.values()):
            from . import audit

            audit.record(workspace.id, "workspace.provisioned", "workspace", workspace.id,
                         {name: {"id": row_id, "state": state} for name, (row_id, state) in rows.items()})
    return rows


def _provision_organization(name, clerk_org_id):
    """By Clerk organization id; else by name (linking it, when it has no Clerk id yet); else new."""
    if clerk_org_id is not None:
        org = Organization.get_or_none(Organization.clerk_org_id == clerk_org_id)
        if org is not None:
            return org, "existing"
    query = Organization.select().where(Organization.name == name)
    if clerk_org_id is not None:
        query = query.where(Organization.clerk_org_id.is_null())
    org = query.order_by(Organization.created_at, Organization.id).first()
    if org is None:
        return Organization.create(id=Organization.next_id(), name=name, clerk_org_id=clerk_org_id), "created"
    if clerk_org_id is None:
        return org, "existing"
    org.clerk_org_id = clerk_org_id
    org.save()
    return org, "updated"


def _provision_user(clerk_user_id, email, name):
    user = User.get_or_none(User.clerk_user_id == clerk_user_id)
    if user is None:
        return User.create(id=User.next_id(), clerk_user_id=clerk_user_id, email=email, name=name), "created"
    if user.email == email and name in (None, user.name):
        return user, "existing"
    user.email = email
    user.name = user.name if name is None else name
    user.save()
    return user, "updated"


class AuthSession(BaseModel):
    """One sign-in: the family of refresh tokens it rotates through, revoked as a whole."""

    ID_PREFIX = "ses"
    id = pw.CharField(primary_key=True, max_length=40)
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    scope = pw.TextField()
    created_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)

    @classmethod
    def live_scopes(cls, session_id, user_id, workspace_id):
        """The scopes the session's member holds now, or None once revoked or no longer a member.

        The token's user and workspace must be the session's own: a token re-signed with the
        server's secret for another workspace (or one that never existed) names no live session."""
        rows = prepared_rows("AuthSession.live_scopes", lambda session_id, user_id, workspace_id: (
            cls.select(Membership.role)
            .join(Membership, on=((Membership.user == cls.user) & (Membership.workspace == cls.workspace)))
            .where((cls.id == session_id) & (cls.user == user_id) & (cls.workspace == workspace_id)
                   & cls.revoked_at.is_null())
            .limit(1)), session_id=session_id, user_id=user_id, workspace_id=workspace_id)
        return ROLE_SCOPES.get(rows[0][0]) if rows else None

    @classmethod
    def open(cls, user_id, workspace_id, scopes):
        """A new sign-in session (audited as `auth.signed_in`, the user as actor)."""
        from . import audit

        with db.atomic():
            session = cls.create(id=cls.next_id(), user=user_id, workspace=workspace_id, scope=" ".join(scopes))
            audit.record(workspace_id, "auth.signed_in", "session", session.id,
                         actor=audit.user_actor(User.get_by_id(user_id)))
        return session

    def revoke(self):
        return (AuthSession.update(revoked_at=utcnow())
                .where((AuthSession.id == self.id) & AuthSession.revoked_at.is_null())
                .execute())

    def sign_out(self):
        """Log out: revoke the session (audited as `auth.signed_out` the first time)."""
        from . import audit

        with db.atomic():
            if self.revoke():
                audit.record(self.workspace_id, "auth.signed_out", "session", self.id,
                             actor=audit.user_actor(User.get_by_id(self.user_id)))


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


class RefreshToken(BaseModel):
    """A refresh token, stored only as its SHA-256; used once, then rotated."""

    token_hash = pw.CharField(primary_key=True, max_length=64)
    session = pw.ForeignKeyField(AuthSession, backref="refresh_tokens", on_delete="CASCADE")
    expires_at = pw.DateTimeField()
    used_at = pw.DateTimeField(null=True)

    @classmethod
    def mint(cls, session, ttl_s):
        token = REFRESH_PREFIX + secrets.token_urlsafe(32)
        cls.create(token_hash=_digest(token), session=session,
                   expires_at=utcnow() + datetime.timedelta(seconds=ttl_s))
        return token

    @classmethod
    def lookup(cls, token):
        if not token.startswith(REFRESH_PREFIX):
            return None
        return cls.get_or_none(cls.token_hash == _digest(token))

    @classmethod
    def rotate(cls, token, ttl_s):
        """Spend `token` and mint its successor. Returns (session, new token) or (None, reason).

        A token presented twice means it leaked: the whole session is revoked.
        """
        from . import events

        with events.transaction():
            row = cls.lookup(token)
            if row is None:
                return None, "refresh token is unknown"
            session = row.session
            if session.revoked_at is not None:
                return None, "refresh token has been revoked"
            if row.expires_at <= utcnow():
                return None, "refresh token has expired"
            spent = (cls.update(used_at=utcnow())
                     .where((cls.token_hash == row.token_hash) & cls.used_at.is_null())
                     .execute())
            if not spent:
                from . import audit

                if session.revoke():
                    audit.record(session.workspace_id, "auth.refresh_token_reused", "session", session.id,
                                 actor=audit.user_actor(User.get_by_id(session.user_id)))
                return None, "refresh token was already used; the session has been revoked"
            return session, cls.mint(session, ttl_s)
