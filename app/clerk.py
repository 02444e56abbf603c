"""Clerk sign-in: verify an RS256 Clerk session JWT (PEM key or cached JWKS) and find whom it signs in."""
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from flask import current_app
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet, RSAKey

from models import Membership, Organization, User

from .config import ConfigError

ALGORITHM = "RS256"
LEEWAY_S = 5  # Clerk's own SDKs allow 5 s of clock skew
JWKS_TIMEOUT_S = 3.0
JWKS_TTL_S = 600
# Refetches for an unknown `kid`, and retries after a failed fetch, happen at most once per window:
# a flood of made-up kids (or a dead JWKS) costs one request per window, not one per sign-in.
JWKS_COOLDOWN_S = 10.0
JWKS_MAX_BYTES = 256 * 1024
EXTENSION = "causeloop.clerk"
NOT_CONFIGURED = "Clerk sign-in is not configured on this server (set CLERK_JWT_KEY or CLERK_JWKS_URL)"

log = logging.getLogger("causeloop.clerk")

# What each failed claim check means; messages name the check, never a value from the token.
CLAIM_REASONS = {
    "exp": "the token has expired",
    "nbf": "the token is not valid yet",
    "iat": "the token was issued in the future",
    "iss": "the issuer is not CLERK_ISSUER",
    "aud": "the audience does not include CLERK_AUDIENCE",
    "sub": "the subject is not a Clerk user id",
}


class SignInRefused(Exception):
    """The subject token signs no one in; the message says which check failed and holds no token material."""


def refused(check, reason):
    return SignInRefused(f"Clerk session token refused by the {check} check: {reason}")


def _fetch_json(url, timeout_s):
    """GET a JSON document within `timeout_s` (connect, and the whole body) and a size cap."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "causeloop-api"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        raise
    with response:
        body = b""
        while chunk := response.read(16384):
            body += chunk
            if len(body) > JWKS_MAX_BYTES:
                raise ValueError(f"the document is over {JWKS_MAX_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within {timeout_s} s")
    return json.loads(body)


class JWKSCache:
    """Clerk's public keys from a JWKS URL: fetched on first use and kept `ttl_s`; an unknown `kid`
    causes one refetch (key rotation), at most once per `cooldown_s`; so does a retry after a failure."""

    def __init__(self, url, ttl_s=JWKS_TTL_S, cooldown_s=JWKS_COOLDOWN_S, timeout_s=JWKS_TIMEOUT_S):
        self.url = url
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._keys = None
        self._expires_at = 0.0
        self._retry_at = 0.0    # after a failed fetch, no new attempt before this
        self._refetch_at = 0.0  # after a refetch for an unknown kid, no other before this

    def key(self, kid):
        """The RSA signing key named `kid`; raises SignInRefused when there is none or no JWKS."""
        with self._lock:
            now = time.monotonic()
            just_fetched = self._keys is None or now >= self._expires_at
            if just_fetched:
                self._refresh(now)
            key = self._find(kid)
            if key is None and not just_fetched and now >= self._refetch_at:
                self._refetch_at = now + self.cooldown_s
                self._refresh(now)
                key = self._find(kid)
        if key is None:
            raise refused("kid", "no key in the JWKS at CLERK_JWKS_URL has the token's key id")
        return key

    def _find(self, kid):
        for key in self._keys:
            if key.kid == kid and key.key_type == "RSA" and key.get("use") in (None, "sig"):
                return key
        return None

    def _refresh(self, now):
        if now < self._retry_at:
            raise refused("jwks", "the JWKS at CLERK_JWKS_URL could not be fetched a moment ago; "
                                  "try again shortly")
        try:
            self._keys = KeySet.import_key_set(_fetch_json(self.url, self.timeout_s))
        except (OSError, http.client.HTTPException, ValueError, TypeError, KeyError, JoseError) as error:
            self._retry_at = now + self.cooldown_s
            log.warning("JWKS fetch from %s failed: %s: %s", self.url, type(error).__name__, error)
            raise refused("jwks", "the JWKS at CLERK_JWKS_URL could not be fetched") from None
        self._expires_at = now + self.ttl_s


class ClerkVerifier:
    """Checks a Clerk session JWT against the configured key and claims; returns its claims."""

    def __init__(self, config):
        pem = config["CLERK_JWT_KEY"].strip()
        url = config["CLERK_JWKS_URL"].strip()
        # The PEM key wins when both are set: it needs no network.
        self.static_key = _import_pem(pem) if pem else None
        self.jwks = None if pem else JWKSCache(_checked_url(url))
        claims = {"exp": {"essential": True}, "sub": {"essential": True}}
        if config["CLERK_ISSUER"]:
            claims["iss"] = {"essential": True, "value": config["CLERK_ISSUER"]}
        if config["CLERK_AUDIENCE"]:
            claims["aud"] = {"essential": True, "value": config["CLERK_AUDIENCE"]}
        self.claims_registry = jwt.JWTClaimsRegistry(leeway=LEEWAY_S, **claims)
        self.authorized_parties = tuple(config["CLERK_AUTHORIZED_PARTIES"])

    def verify(self, token):
        header = _header(token)
        if header.get("alg") != ALGORITHM:
            raise refused("alg", f"only {ALGORITHM}-signed tokens are accepted")
        key = self.static_key or self._jwks_key(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM]).claims
        except BadSignatureError:
            raise refused("signature", "the signature does not match the Clerk signing key") from None
        except (JoseError, ValueError, TypeError):
            raise refused("format", "the token is not a well-formed JWT") from None
        self._check_claims(claims)
        return claims

    def _jwks_key(self, kid):
        if not isinstance(kid, str) or not kid:
            raise refused("kid", "the token names no signing key (kid)")
        return self.jwks.key(kid)

    def _check_claims(self, claims):
        try:
            self.claims_registry.validate(claims)
        except MissingClaimError as error:
            raise refused(error.claim, "a required claim is missing") from None
        except ClaimError as error:
            reason = CLAIM_REASONS.get(error.claim, "the claim has an invalid value")
            raise refused(error.claim, reason) from None
        if self.authorized_parties and claims.get("azp") not in self.authorized_parties:
            raise refused("azp", "the authorized party is not one of CLERK_AUTHORIZED_PARTIES")


def _header(token):
    try:
        return jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, TypeError):
        raise refused("format", "the token is not a well-formed JWT") from None


def _import_pem(pem):
    try:
        return RSAKey.import_key(pem)
    except (JoseError, ValueError, TypeError):
        raise ConfigError("CLERK_JWT_KEY must be an RSA public key in PEM form "
                          "(-----BEGIN PUBLIC KEY----- ...)") from None


def _checked_url(url):
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"CLERK_JWKS_URL must be an http(s) URL, got {url!r}")
    return url


def _active_organization(claims):
    """The Clerk organization the session is acting in: `o.id` (v2 session tokens) or `org_id`."""
    org = claims.get("o")
    org_id = org.get("id") if isinstance(org, dict) else None
    org_id = org_id or claims.get("org_id")
    if org_id is not None and not isinstance(org_id, str):
        raise refused("organization", "the active organization claim is malformed")
    return org_id


def _workspace_for(user, clerk_org_id):
    """The one workspace the user belongs to (in the active organization's workspaces, if any)."""
    among = "workspace"
    if clerk_org_id is not None:
        if not Organization.select().where(Organization.clerk_org_id == clerk_org_id).exists():
            raise refused("organization", "the active Clerk organization is not linked to a "
                                          "Causeloop organization")
        among = "workspace of the active organization"
    memberships = list(Membership.of_user(user.id, clerk_org_id).limit(2))
    if not memberships:
        raise refused("membership", f"the user is not a member of any {among}")
    if len(memberships) > 1:
        raise refused("membership", f"the user is a member of more than one {among}, so which one "
                                    "to sign in to is ambiguous")
    return memberships[0].workspace_id


def verified_claims(subject_token):
    """The claims of a Clerk session token that passes every check; raises SignInRefused."""
    verifier = current_app.extensions.get(EXTENSION)
    if verifier is None:
        raise SignInRefused(NOT_CONFIGURED)
    try:
        return verifier.verify(subject_token)
    except SignInRefused as refusal:
        log.info("sign-in refused: %s", refusal)
        raise


def sign_in(subject_token, workspace_id=None):
    """The (user id, workspace id) a Clerk session token signs in — to `workspace_id` when given
    (one of the user's memberships), else by the active organization; raises SignInRefused."""
    claims = verified_claims(subject_token)
    try:
        user = User.get_or_none(User.clerk_user_id == claims["sub"])
        if user is None:
            raise refused("user", "no Causeloop user has this Clerk user id")
        if workspace_id is not None:
            if Membership.find(user.id, workspace_id) is None:
                raise refused("membership", "the user is not a member of the requested workspace")
            return user.id, workspace_id
        return user.id, _workspace_for(user, _active_organization(claims))
    except SignInRefused as refusal:
        log.info("sign-in refused: %s", refusal)
        raise


def invitee(subject_token):
    """Who a Clerk session token proves the caller is, for accepting an invitation:
    {clerk_user_id, email, name}. Clerk puts the email in a session token only through a custom
    claim: `email` (`{{user.primary_email_address}}` in the Clerk dashboard's session token)."""
    claims = verified_claims(subject_token)
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        refusal = refused("email", "the token carries no `email` claim (add it to Clerk's session token)")
        log.info("sign-in refused: %s", refusal)
        raise refusal
    name = claims.get("name")
    return {"clerk_user_id": claims["sub"], "email": email, "name": name if isinstance(name, str) else None}


def init_app(app):
    """Build the verifier once per app (checking the Clerk settings), or None when Clerk is not set up."""
    configured = app.config["CLERK_JWT_KEY"].strip() or app.config["CLERK_JWKS_URL"].strip()
    app.extensions[EXTENSION] = ClerkVerifier(app.config) if configured else None
