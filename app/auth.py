"""Who is calling: session JWTs (HS256, joserfc) and API tokens (`clp_…`), both checked by
Authlib's resource protector, and the one principal they produce."""
import functools
import time
import uuid

from authlib.integrations.flask_oauth2 import ResourceProtector, current_token
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError
from flask import current_app, g, has_request_context, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from models import ApiToken, AuthSession, RefreshToken, User, audit
from models.tokens import TOKEN_PREFIX

from .errors import WWW_AUTHENTICATE, ApiError
from .ratelimit import client_ip

EXPIRATION_HEADER = "Causeloop-Authentication-Token-Expiration"

ALGORITHM = "HS256"
ISSUER = "causeloop"
CLAIMS = jwt.JWTClaimsRegistry(
    leeway=30,
    iss={"essential": True, "value": ISSUER},
    sub={"essential": True},
    exp={"essential": True},
    iat={"essential": True},
    jti={"essential": True},
    sid={"essential": True},
    workspace_id={"essential": True},
    scope={"essential": True},
)

TEXT_CLAIMS = ("sub", "sid", "workspace_id", "scope")


def _signing_key():
    return _key(current_app.config["JWT_SECRET"])


@functools.lru_cache(maxsize=4)
def _key(secret):
    return OctKey.import_key(secret)


def grant_tokens(session):
    """The exchange/refresh response for an auth session: a fresh access token plus `refresh_token`."""
    ttl = current_app.config["ACCESS_TOKEN_TTL_S"]
    now = int(time.time())
    claims = {
        "iss": ISSUER, "sub": session.user_id, "workspace_id": session.workspace_id,
        "scope": session.scope, "sid": session.id, "iat": now, "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    access = jwt.encode({"alg": ALGORITHM, "typ": "JWT"}, claims, _signing_key(), algorithms=[ALGORITHM])
    return {"access_token": access, "token_type": "bearer", "expires_in": ttl, "scope": session.scope,
            "workspace_id": session.workspace_id}


def start_session(user_id, workspace_id, scopes):
    """Open a sign-in session and return its first token pair."""
    session = AuthSession.open(user_id, workspace_id, scopes)
    refresh = RefreshToken.mint(session, current_app.config["REFRESH_TOKEN_TTL_S"])
    return {**grant_tokens(session), "refresh_token": refresh}


class Principal:
    """Who is calling, whatever proved it: the one object routes read (and the audit log and
    a per-caller rate limit are to read). `kind` is "user" (a signed-in member's session), "api_token" (a member's
    personal token, acting for them) or "service_account"; `user_id` is None for a service
    account; `id` is the user's, the token's or the service account's; `display` labels it
    for people and logs; `token_id` and `expires_at` are an API token's (None for a session).

    Also what Authlib's validator checks (is_expired, is_revoked, get_scope)."""

    kind = id = workspace_id = user_id = display = token_id = expires_at = None
    scopes = ()

    def is_expired(self):
        return False

    def is_revoked(self):
        return False

    def get_scope(self):
        return " ".join(self.scopes)


class AccessToken(dict, Principal):
    """A session JWT's validated claims, plus what the database says of the session right now."""

    kind = "user"
    _live_scopes = None

    @property
    def id(self):
        return self["sub"]

    @property
    def display(self):
        return self["sub"]

    @property
    def user_id(self):
        return self["sub"]

    @property
    def workspace_id(self):
        return self["workspace_id"]

    @property
    def scopes(self):
        return tuple(self.get_scope().split())

    def is_expired(self):
        return False  # `exp` is checked when the token is decoded

    def is_revoked(self):
        self._live_scopes = AuthSession.live_scopes(self["sid"], self["sub"], self["workspace_id"])
        return self._live_scopes is None

    def get_scope(self):
        """What the member's role grants today: a promotion or demotion applies from the next
        request (the token's own `scope` claim says what the role granted at sign-in)."""
        return " ".join(self["scope"].split() if self._live_scopes is None else self._live_scopes)


class JWTBearerValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        try:
            # The quickstart's own curl line sends "Bearer $TOKEN " with a trailing space.
            token = jwt.decode(token_string.strip(), _signing_key(), algorithms=[ALGORITHM])
            CLAIMS.validate(token.claims)
        except (JoseError, ValueError, TypeError):
            return None
        if not all(isinstance(token.claims[name], str) for name in TEXT_CLAIMS):
            return None  # signed, but not by us as we sign: never let a list or number reach a query
        return AccessToken(token.claims)


class ApiTokenPrincipal(Principal):
    """An API token that checked out: a member's personal token or a service account's."""

    def __init__(self, live):
        self.kind = "api_token" if live.user_id is not None else "service_account"
        self.id = live.token_id if live.user_id is not None else live.service_account_id
        self.token_id, self.workspace_id, self.user_id = live.token_id, live.workspace_id, live.user_id
        self.scopes, self.expires_at, self.display = live.scopes, live.expires_at, live.display


class ApiTokenValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        live = ApiToken.authenticate(token_string.strip(), client_ip())
        return None if live is None else ApiTokenPrincipal(live)


class BearerValidator(BearerTokenValidator):
    """The protector's one validator for "Bearer": Authlib keeps a single validator per token
    type, so API tokens (`clp_…`) and session JWTs are told apart here, by prefix."""

    def __init__(self, realm=None, **extra_attributes):
        super().__init__(realm, **extra_attributes)
        self.jwt = JWTBearerValidator(realm, **extra_attributes)
        self.api_token = ApiTokenValidator(realm, **extra_attributes)

    def authenticate_token(self, token_string):
        is_api_token = token_string.strip().startswith(TOKEN_PREFIX)
        return (self.api_token if is_api_token else self.jwt).authenticate_token(token_string)


def build_protector():
    protector = ResourceProtector()
    protector.register_token_validator(BearerValidator(realm="causeloop"))
    return protector


def require_scope(protector, scope=None, members_only=False):
    """Decorator: a valid access token (carrying `scope`, if given; a signed-in member's
    session, if `members_only`), else 401 / 403 in the envelope."""

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                principal = protector.acquire_token(None if scope is None else [scope])
            except InsufficientScopeError:
                raise ApiError(403, f"This token lacks the {scope} scope",
                               details={"required_scope": scope}) from None
            except OAuth2Error as error:
                missing = error.error == "missing_authorization"
                message = ("An Authorization: Bearer <access token> header is required" if missing
                           else "The access token is invalid, expired or revoked")
                header = WWW_AUTHENTICATE if missing else f'{WWW_AUTHENTICATE}, error="invalid_token"'
                raise ApiError(401, message, headers={"WWW-Authenticate": header}) from None
            if members_only and principal.kind != "user":
                raise ApiError(403, "API tokens cannot manage credentials (API tokens, service accounts, "
                                    "connectors, webhooks); use a signed-in member's access token")
            return func(*args, **kwargs)

        return wrapper

    return decorator


def current_principal():
    """The Principal of the request being served."""
    return current_token._get_current_object()


def actor_of(principal):
    """The audit log's {type, id, display} for a principal: a personal token acts for its member."""
    if principal.kind == "service_account":
        return {"type": "service_account", "id": principal.id, "display": principal.display}
    if principal.kind == "user":
        user = User.get_or_none(User.id == principal.user_id)
        return audit.user_actor(user) if user else {"type": "user", "id": principal.user_id,
                                                    "display": principal.user_id}
    return {"type": "user", "id": principal.user_id, "display": principal.display}


def audit_context():
    """Who is acting, from where, in which request (the audit log's context); the system
    outside a request or before a token has been checked."""
    if not has_request_context():
        return {"actor": audit.SYSTEM, "ip": None, "user_agent": None, "request_id": None}
    principal = g.get("authlib_server_oauth2_token")
    return {"actor": audit.SYSTEM if principal is None else actor_of(principal), "ip": client_ip(),
            "user_agent": request.headers.get("User-Agent"), "request_id": g.get("request_id")}


def init_app(app):
    audit.set_context_provider(audit_context)

    @app.after_request
    def announce_expiry(response):
        """A request made with an API token learns when that token expires, on every response."""
        principal = g.get("authlib_server_oauth2_token")
        if principal is not None and principal.token_id is not None:
            response.headers[EXPIRATION_HEADER] = principal.expires_at.isoformat() + "Z"
        return response
