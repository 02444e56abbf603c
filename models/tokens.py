"""API tokens and service accounts: long-lived bearer secrets for scripts, CI and other machines.

A personal token (`clp_pat_…`) acts for the member who made it, in that workspace, and never
with more than the member's role grants at the time of the call; it stops working when the
membership ends. A service account is a workspace's machine identity: its tokens (`clp_sat_…`)
hold their own scopes and outlive whoever made them.

A secret is its prefix, 32 base62 characters from `secrets` (190 bits) and a 6-character
base62 CRC32 of everything before it, as GitHub's token format has: a mistyped or truncated
secret is refused by its checksum before any database lookup. Only its SHA-256 is stored (the
secret is far too random to guess from a hash, and the tokens survive a JWT_SECRET rotation),
with its last four characters so people can tell tokens apart.
"""
import datetime
import hashlib
import ipaddress
import secrets
import string
import zlib
from dataclasses import dataclass

import peewee as pw

from . import audit
from .accounts import ROLE_SCOPES, Membership, User, Workspace
from .base import BaseModel, Conflict, Forbidden, NotFound, RuleViolation, WorkspaceScoped, db, for_update, utcnow

PERSONAL_PREFIX = "clp_pat_"
SERVICE_PREFIX = "clp_sat_"
TOKEN_PREFIX = "clp_"  # what tells an API token from a session JWT (which starts "ey")
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_LENGTH = 32  # 32 × log2(62) ≈ 190 bits
CHECKSUM_LENGTH = 6  # 62**6 > 2**32: any CRC32 fits
SECRET_LENGTH = len(PERSONAL_PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
MAX_LIFETIME_DAYS = 366
MAX_TOKENS_PER_OWNER = 50  # so a list is one short page
MAX_SERVICE_ACCOUNTS = 100
MAX_CIDRS = 20
LAST_USED_RESOLUTION_S = 60  # last_used_at moves at most once a minute: never a write per request

SCOPE_DESCRIPTIONS = {
    "issues:read": "Read issues, their similar issues and the live event stream.",
    "issues:write": "Create, update, close and bulk-edit issues.",
    "patterns:read": "Read patterns, their issues and the grouping rules.",
    "patterns:write": "Create and update patterns and grouping rules.",
    "ingest:write": "Send failures from other systems (POST /v1/ingest/events and /v1/ingest/batch).",
    "predictions:read": "Read predictions, forecasts, their backtest and pattern frequency.",
    "predictions:write": "Confirm or dismiss predictions.",
    "alerts:read": "Read alert rules and your own notification feed.",
    "alerts:write": "Create, change and delete alert rules.",
    "members:read": "List the workspace's members.",
    "members:write": "Invite members (up to your own role) and manage invitations (never held by a token).",
    "members:admin": "Change members' roles and remove members, up to your own role (never held by a token).",
    "audit:read": "Read and export the workspace's audit log.",
    "workspace.compliance:read": "Read the workspace's data-retention settings.",
    "workspace.compliance:write": "Change the workspace's data-retention settings.",
    "workspace:write": "Change the workspace's own settings.",
    "tokens:admin": "Manage service accounts and their tokens (signed-in members only; never held by a token).",
    "connectors:admin": "Manage inbound webhook connectors and their signing secrets (signed-in members only; "
                        "never held by a token).",
    "webhooks:admin": "Manage outbound webhooks and see their deliveries (signed-in members only; never held "
                      "by a token).",
}
# Never held by a token: no token mints or manages tokens or webhook secrets (a leaked one cannot
# make itself a successor, a way in, nor point the workspace's events at a receiver of its
# choosing), and none lets a person in or changes who may do what.
NOT_FOR_TOKENS = ("tokens:admin", "connectors:admin", "webhooks:admin", "members:write", "members:admin")
TOKEN_SCOPES = tuple(scope for scope in SCOPE_DESCRIPTIONS if scope not in NOT_FOR_TOKENS)


def _base62(number, width):
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def _checksum(body):
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def new_secret(prefix):
    body = prefix + "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return body + _checksum(body)


def well_formed(secret):
    """Whether `secret` is an API token as we mint them, checksum included: no database needed."""
    if len(secret) != SECRET_LENGTH or not secret.startswith((PERSONAL_PREFIX, SERVICE_PREFIX)):
        return False
    body, checksum = secret[:-CHECKSUM_LENGTH], secret[-CHECKSUM_LENGTH:]
    if any(char not in BASE62 for char in secret[len(PERSONAL_PREFIX):]):
        return False
    return secrets.compare_digest(_checksum(body), checksum)


def digest(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def normalise_cidr(text):
    """`10.0.0.0/8`, `2001:db8::/32` or one address -> its network's text; ValueError if neither."""
    return str(ipaddress.ip_network(text.strip(), strict=False))


def expiry(fields):
    """The `expires_at` a create asks for: given directly, or `expires_in_days` from now."""
    if fields.get("expires_at") is not None:
        return fields["expires_at"]
    return utcnow() + datetime.timedelta(days=fields["expires_in_days"])


def check_scopes(requested, granted):
    """Refuse scopes the creator's role does not grant today."""
    beyond = [scope for scope in requested if scope not in granted]
    if beyond:
        raise Forbidden(f"Your role does not grant {', '.join(beyond)}; a token holds no more than its "
                        "creator may do", scopes=[f"Not granted to you: {scope}" for scope in beyond])


class ServiceAccount(WorkspaceScoped, BaseModel):
    """A workspace's machine identity. Its tokens depend on no member: `created_by` is kept
    for the record and becomes null when that user is deleted."""

    KIND = "Service account"
    ID_PREFIX = "sva"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, backref="service_accounts", on_delete="CASCADE")
    name = pw.CharField(max_length=100)
    description = pw.TextField(default="")
    created_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = ((("workspace", "name"), True),)

    @property
    def tokens(self):
        return ApiToken.select().where(ApiToken.service_account == self.id).order_by(ApiToken.created_at,
                                                                                      ApiToken.id)

    @classmethod
    def listed(cls, workspace_id):
        return cls.in_workspace(workspace_id).order_by(cls.name, cls.id)

    @classmethod
    def create_in(cls, workspace_id, data, created_by):
        with db.atomic():
            if cls.in_workspace(workspace_id).count() >= MAX_SERVICE_ACCOUNTS:
                raise RuleViolation("name", f"A workspace has at most {MAX_SERVICE_ACCOUNTS} service accounts")
            _unique_name(cls.in_workspace(workspace_id), cls.name, data["name"], "service account")
            account = _insert(cls, "service account", id=cls.next_id(), workspace=workspace_id,
                              created_by=created_by, **data)
            audit.record(workspace_id, "service_account.created", "service_account", account.id,
                         {"name": account.name})
            return account

    @classmethod
    def update_in(cls, account_id, workspace_id, changes):
        with db.atomic():
            account = cls.get_in_workspace(account_id, workspace_id, lock=True)
            if changes.get("name", account.name) != account.name:
                _unique_name(cls.in_workspace(workspace_id), cls.name, changes["name"], "service account")
            before = {name: getattr(account, name) for name in changes}
            for name, value in changes.items():
                setattr(account, name, value)
            account.updated_at = utcnow()
            with _conflict_on_duplicate(account.name, "service account"):
                account.save()
            audit.record(workspace_id, "service_account.updated", "service_account", account.id,
                         {name: {"before": before[name], "after": value} for name, value in changes.items()})
        return account

    @classmethod
    def delete_in(cls, account_id, workspace_id):
        """Delete the account and, with it, every token it holds."""
        with db.atomic():
            account = cls.get_in_workspace(account_id, workspace_id, lock=True)
            revoked = ApiToken.delete().where(ApiToken.service_account == account.id).execute()
            account.delete_instance()
            audit.record(workspace_id, "service_account.deleted", "service_account", account.id,
                         {"name": account.name, "tokens_revoked": revoked})


class ApiToken(BaseModel):
    """One token: a personal one (`user` set) or a service account's (`service_account` set)."""

    KIND = "API token"
    ID_PREFIX = "tok"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    user = pw.ForeignKeyField(User, null=True, on_delete="CASCADE")
    service_account = pw.ForeignKeyField(ServiceAccount, null=True, backref="api_tokens", on_delete="CASCADE")
    name = pw.CharField(max_length=100)
    scope = pw.TextField()  # space-separated, as sessions keep theirs
    allowed_cidrs = pw.JSONField(default=list)
    token_hash = pw.CharField(max_length=64, unique=True)
    last_four = pw.CharField(max_length=4)
    created_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()
    last_used_at = pw.DateTimeField(null=True)
    rotated_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("workspace", "user", "name"), True), (("service_account", "name"), True))

    @property
    def scopes(self):
        return tuple(self.scope.split())

    @property
    def status(self):
        return "expired" if self.expires_at <= utcnow() else "active"

    # -- personal tokens: a member's own, in the workspace they signed in to ----------------

    @classmethod
    def personal(cls, user_id, workspace_id):
        return (cls.select().where((cls.user == user_id) & (cls.workspace == workspace_id))
                .order_by(cls.created_at, cls.id))

    @classmethod
    def get_personal(cls, token_id, user_id, workspace_id, lock=False):
        """The member's own token, or NotFound (another member's tokens do not exist for them)."""
        query = cls.personal(user_id, workspace_id).where(cls.id == token_id)
        token = (for_update(query) if lock else query).first()
        if token is None:
            raise NotFound(cls.KIND, token_id)
        return token

    @classmethod
    def create_personal(cls, user_id, workspace_id, data, granted):
        """A new personal token; its `secret` (on this object only, never stored) is shown this once."""
        check_scopes(data["scopes"], granted)
        with db.atomic():
            return cls._mint(cls.personal(user_id, workspace_id), PERSONAL_PREFIX, data,
                             workspace=workspace_id, user=user_id, created_by=user_id)

    @classmethod
    def create_for_service_account(cls, account_id, workspace_id, data, granted, created_by):
        check_scopes(data["scopes"], granted)
        with db.atomic():
            account = ServiceAccount.get_in_workspace(account_id, workspace_id, lock=True)
            return cls._mint(account.tokens, SERVICE_PREFIX, data, workspace=workspace_id,
                             service_account=account.id, created_by=created_by)

    @classmethod
    def _mint(cls, siblings, prefix, data, **owner):
        if siblings.count() >= MAX_TOKENS_PER_OWNER:
            raise RuleViolation("name", f"At most {MAX_TOKENS_PER_OWNER} tokens each; delete expired ones first")
        _unique_name(siblings, cls.name, data["name"], "token")
        secret = new_secret(prefix)
        token = _insert(cls, "token", id=cls.next_id(), name=data["name"],
                        scope=" ".join(dict.fromkeys(data["scopes"])), allowed_cidrs=data.get("allowed_cidrs", []),
                        token_hash=digest(secret), last_four=secret[-4:], expires_at=expiry(data), **owner)
        token.secret = secret
        audit.record(token.workspace_id, "api_token.created", "api_token", token.id, token.audited())
        return token

    def audited(self):
        """What the audit log keeps of a token: never its secret or hash."""
        return {"name": self.name, "scopes": list(self.scopes), "service_account_id": self.service_account_id,
                "expires_at": self.expires_at.isoformat() + "Z"}

    @classmethod
    def rotate_personal(cls, token_id, user_id, workspace_id):
        """A new secret for the token (same id, name, scopes and expiry); the old one stops
        working at once. The new `secret` is on the returned object only."""
        with db.atomic():
            token = cls.get_personal(token_id, user_id, workspace_id, lock=True)
            if token.status == "expired":
                raise RuleViolation("expires_at", "An expired token cannot be rotated; create a new one")
            secret = new_secret(PERSONAL_PREFIX)
            token.token_hash, token.last_four, token.rotated_at = digest(secret), secret[-4:], utcnow()
            token.save()
            audit.record(workspace_id, "api_token.rotated", "api_token", token.id, token.audited())
        token.secret = secret
        return token

    @classmethod
    def revoke_personal(cls, token_id, user_id, workspace_id):
        with db.atomic():
            token = cls.get_personal(token_id, user_id, workspace_id, lock=True)
            token.delete_instance()
            audit.record(workspace_id, "api_token.revoked", "api_token", token.id, token.audited())

    @classmethod
    def revoke_for_service_account(cls, token_id, account_id, workspace_id):
        with db.atomic():
            account = ServiceAccount.get_in_workspace(account_id, workspace_id)
            token = cls.get_or_none((cls.id == token_id) & (cls.service_account == account.id))
            if token is None:
                raise NotFound(cls.KIND, token_id)
            token.delete_instance()
            audit.record(workspace_id, "api_token.revoked", "api_token", token.id, token.audited())

    # -- authentication ------------------------------------------------------------------------

    @classmethod
    def authenticate(cls, secret, client_ip):
        """The live token a secret presents, from `client_ip`, as an `Authenticated`; None when
        it is malformed, unknown (revoked, rotated out), expired, from outside its networks,
        or a personal token whose member has left."""
        if not well_formed(secret):
            return None
        row = cls._lookup(digest(secret))
        if row is None or row.expires_at <= utcnow() or not _allowed(row.allowed_cidrs, client_ip):
            return None
        if row.user_id is not None:
            role = getattr(row, "role", None)
            if role is None:
                return None
            scopes = tuple(scope for scope in row.scopes if scope in ROLE_SCOPES.get(role, ()))
            display = f"token {row.name!r} of {row.user_id}"
        else:
            scopes, display = row.scopes, f"service account {row.account_name!r} ({row.service_account_id})"
        row.touch()
        return Authenticated(token_id=row.id, workspace_id=row.workspace_id, user_id=row.user_id,
                             service_account_id=row.service_account_id, scopes=scopes,
                             expires_at=row.expires_at, display=display)

    @classmethod
    def _lookup(cls, token_hash):
        """The token with the member's role (personal) or the account's name, in one query."""
        return (cls.select(cls, Membership.role.alias("role"), ServiceAccount.name.alias("account_name"))
                .join(Membership, pw.JOIN.LEFT_OUTER,
                      on=((Membership.user == cls.user) & (Membership.workspace == cls.workspace)))
                .switch(cls).join(ServiceAccount, pw.JOIN.LEFT_OUTER, on=(ServiceAccount.id == cls.service_account))
                .where(cls.token_hash == token_hash)
                .objects().first())

    def touch(self):
        """Record a use, at most once a minute (so a busy token costs no write per request)."""
        now = utcnow()
        cutoff = now - datetime.timedelta(seconds=LAST_USED_RESOLUTION_S)
        if self.last_used_at is not None and self.last_used_at > cutoff:
            return
        cls = type(self)
        (cls.update(last_used_at=now)
         .where((cls.id == self.id) & (cls.last_used_at.is_null() | (cls.last_used_at <= cutoff)))
         .execute())


@dataclass(frozen=True)
class Authenticated:
    """What a presented token may do, right now."""

    token_id: str
    workspace_id: str
    user_id: str | None
    service_account_id: str | None
    scopes: tuple
    expires_at: datetime.datetime
    display: str


def _allowed(cidrs, client_ip):
    if not cidrs:
        return True
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(cidr) for cidr in cidrs)


def _unique_name(query, field, name, noun):
    if query.where(field == name).exists():
        message = f"A {noun} named {name!r} already exists"
        raise Conflict(message, name=[message])


class _conflict_on_duplicate:
    """A concurrent create with the same name loses at the unique index: a 409 too."""

    def __init__(self, name, noun):
        self.name, self.noun = name, noun
        self.savepoint = db.atomic()

    def __enter__(self):
        self.savepoint.__enter__()

    def __exit__(self, kind, error, traceback):
        self.savepoint.__exit__(kind, error, traceback)
        if kind is not None and issubclass(kind, pw.IntegrityError):
            message = f"A {self.noun} named {self.name!r} already exists"
            raise Conflict(message, name=[message]) from error
        return False


def _insert(model, noun, **fields):
    with _conflict_on_duplicate(fields["name"], noun):
        return model.create(**fields)
