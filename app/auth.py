"""Causeloop access tokens: HS256 JWTs (joserfc) checked by Authlib's resource protector."""
import functools
import time
import uuid

from authlib.integrations.flask_oauth2 import ResourceProtector, current_token
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from models import AuthSession, RefreshToken

from .errors import WWW_AUTHENTICATE, ApiError

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
    session = AuthSession.create(id=AuthSession.next_id(), user=user_id, workspace=workspace_id,
                                 scope=" ".join(scopes))
    refresh = RefreshToken.mint(session, current_app.config["REFRESH_TOKEN_TTL_S"])
    return {**grant_tokens(session), "refresh_token": refresh}


class AccessToken(dict):
    """Validated claims, plus what the database says of the session right now."""

    _live_scopes = None

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
        self._live_scopes = AuthSession.live_scopes(self["sid"])
        return self._live_scopes is None

    def get_scope(self):
        """What the token carries, never more than the member's role grants today."""
        carried = self["scope"].split()
        if self._live_scopes is not None:
            carried = [scope for scope in carried if scope in self._live_scopes]
        return " ".join(carried)


class JWTBearerValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        try:
            # The quickstart's own curl line sends "Bearer $TOKEN " with a trailing space.
            token = jwt.decode(token_string.strip(), _signing_key(), algorithms=[ALGORITHM])
            CLAIMS.validate(token.claims)
        except (JoseError, ValueError, TypeError):
            return None
        return AccessToken(token.claims)


def build_protector():
    protector = ResourceProtector()
    protector.register_token_validator(JWTBearerValidator(realm="causeloop"))
    return protector


def require_scope(protector, scope=None):
    """Decorator: a valid access token (carrying `scope`, if given), else 401 / 403 in the envelope."""

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                protector.acquire_token(None if scope is None else [scope])
            except InsufficientScopeError:
                raise ApiError(403, f"This token lacks the {scope} scope",
                               details={"required_scope": scope}) from None
            except OAuth2Error as error:
                missing = error.error == "missing_authorization"
                message = ("An Authorization: Bearer <access token> header is required" if missing
                           else "The access token is invalid, expired or revoked")
                header = WWW_AUTHENTICATE if missing else f'{WWW_AUTHENTICATE}, error="invalid_token"'
                raise ApiError(401, message, headers={"WWW-Authenticate": header}) from None
            return func(*args, **kwargs)

        return wrapper

    return decorator


def current_principal():
    """The validated token of the request being served."""
    return current_token._get_current_object()
