"""Real sign-in: Clerk session JWTs checked against a PEM key or a JWKS served on loopback,
mapped to a user and a workspace; and the `flask provision` command that sets up the first owner."""
import base64
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

import fixtures
from app.clerk import JWKS_TIMEOUT_S
from app.config import ConfigError
from models import Membership, Organization, User, Workspace, db, schema

ISSUER = "https://clerk.causeloop.test"
FRONTEND = "https://app.causeloop.test"
ORG_A, ORG_B = "org_clerk_acme", "org_clerk_globex"
WS_A, WS_B = "ws_clerk_acme", "ws_clerk_globex"
MULTI = "user_clerk_multi"        # member of WS_A (analyst) and WS_B (viewer)
SOLO = "user_clerk_solo"          # member of WS_A only
LONER = "user_clerk_loner"        # a user with no membership
STRANGER = "user_clerk_stranger"  # no Causeloop user at all


def b64(data):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def session_claims(sub=SOLO, **overrides):
    now = int(time.time())
    claims = {"sub": sub, "iss": ISSUER, "iat": now - 1, "nbf": now - 1, "exp": now + 60,
              "azp": FRONTEND, "sid": "sess_test", "v": 2, **overrides}
    return {name: value for name, value in claims.items() if value is not None}


def clerk_token(key, sub=SOLO, **overrides):
    """A Clerk-like RS256 session JWT signed with `key`, whose `kid` is in the header."""
    header = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
    return jwt.encode(header, session_claims(sub, **overrides), key, algorithms=["RS256"])


def exchange(client, token):
    return client.post("/v1/auth/exchange", json={"subject_token": token})


def assert_refused(response, token, check):
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "invalid_grant"
    assert f"by the {check} check" in error["message"]
    body = response.get_data(as_text=True)
    assert token not in body
    assert token.split(".")[1] not in body


@pytest.fixture(scope="module")
def signing_key():
    return RSAKey.generate_key(2048, parameters={"kid": "ins_key_1"})


@pytest.fixture(scope="module")
def other_key():
    return RSAKey.generate_key(2048, parameters={"kid": "ins_key_2"})


class JWKSServer(http.server.ThreadingHTTPServer):
    """Serves `keys` as a JWKS on loopback, counting the requests it answers."""

    daemon_threads = True

    def __init__(self, keys):
        super().__init__(("127.0.0.1", 0), JWKSHandler)
        self.keys = list(keys)
        self.hits = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}/.well-known/jwks.json"


class JWKSHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits += 1
        body = json.dumps({"keys": [key.as_dict(private=False) for key in self.server.keys]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def jwks(signing_key):
    server = JWKSServer([signing_key])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def add_accounts():
    """Two Clerk-linked organizations with a workspace each, and users placed in them."""
    Organization.create(id="org_test_acme", name="Acme", clerk_org_id=ORG_A)
    Organization.create(id="org_test_globex", name="Globex", clerk_org_id=ORG_B)
    Workspace.create(id=WS_A, organization="org_test_acme", name="Acme")
    Workspace.create(id=WS_B, organization="org_test_globex", name="Globex")
    for clerk_id in (MULTI, SOLO, LONER):
        User.create(id=f"usr_{clerk_id}", clerk_user_id=clerk_id, email=f"{clerk_id}@example.test")
    Membership.create(id="mem_multi_a", user=f"usr_{MULTI}", workspace=WS_A, role="analyst")
    Membership.create(id="mem_multi_b", user=f"usr_{MULTI}", workspace=WS_B, role="viewer")
    Membership.create(id="mem_solo_a", user=f"usr_{SOLO}", workspace=WS_A, role="owner")


@pytest.fixture
def make_real_app(make_app, jwks):
    """An app in real (non-mock) mode on a migrated database holding only the seed."""

    def build(**overrides):
        settings = {"USE_MOCK": False, "CLERK_JWKS_URL": jwks.url, "CLERK_ISSUER": ISSUER, **overrides}
        app = make_app(**settings)
        with app.app_context(), db.connection_context():
            schema.migrate()
            fixtures.load_seed(reset=True)
        return app

    return build


@pytest.fixture
def clerk_client(make_real_app):
    """A client of a real-mode app with Clerk-linked accounts; overrides change its Clerk settings."""

    def build(**overrides):
        app = make_real_app(**overrides)
        with app.app_context(), db.connection_context():
            add_accounts()
        return app.test_client()

    return build


@pytest.fixture
def client(clerk_client):
    return clerk_client()


def unused_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- accepted tokens -----------------------------------------------------------------------


def test_valid_token_exchanges_for_causeloop_tokens(client, signing_key):
    response = exchange(client, clerk_token(signing_key, SOLO))
    assert response.status_code == 200
    body = response.get_json()
    assert body["workspace_id"] == WS_A
    assert body["refresh_token"].startswith("clp_refresh_")
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}).get_json()
    assert me["user"]["id"] == f"usr_{SOLO}"
    assert me["role"] == "owner"


@pytest.mark.parametrize("org, workspace, role", [(ORG_A, WS_A, "analyst"), (ORG_B, WS_B, "viewer")])
def test_active_organization_claim_chooses_the_workspace(client, signing_key, org, workspace, role):
    token = clerk_token(signing_key, MULTI, o={"id": org, "rol": "member", "slg": "acme"})
    body = exchange(client, token).get_json()
    assert body["workspace_id"] == workspace
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}).get_json()
    assert me["role"] == role


def test_legacy_org_id_claim_chooses_the_workspace(client, signing_key):
    body = exchange(client, clerk_token(signing_key, MULTI, org_id=ORG_B)).get_json()
    assert body["workspace_id"] == WS_B


def test_without_an_organization_the_only_membership_is_used(client, signing_key):
    response = exchange(client, clerk_token(signing_key, SOLO, o=None, org_id=None))
    assert response.status_code == 200
    assert response.get_json()["workspace_id"] == WS_A


@pytest.mark.parametrize("workspace, role", [(WS_A, "analyst"), (WS_B, "viewer")])
def test_a_requested_workspace_among_the_users_memberships_is_signed_in(client, signing_key, workspace, role):
    token = clerk_token(signing_key, MULTI, o=None, org_id=None)
    body = client.post("/v1/auth/exchange", json={"subject_token": token, "workspace_id": workspace}).get_json()
    assert body["workspace_id"] == workspace
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}).get_json()
    assert me["role"] == role
    assert {(w["id"], w["role"]) for w in me["workspaces"]} == {(WS_A, "analyst"), (WS_B, "viewer")}


def test_a_requested_workspace_the_user_is_not_in_is_refused(client, signing_key):
    token = clerk_token(signing_key, SOLO)
    response = client.post("/v1/auth/exchange", json={"subject_token": token, "workspace_id": WS_B})
    assert_refused(response, token, "membership")


def test_pem_key_verifies_without_any_jwks(clerk_client, signing_key):
    pem = signing_key.as_pem(private=False).decode()
    client = clerk_client(CLERK_JWKS_URL="", CLERK_JWT_KEY=pem)
    response = exchange(client, clerk_token(signing_key, SOLO))
    assert response.status_code == 200
    assert response.get_json()["workspace_id"] == WS_A


def test_a_few_seconds_of_clock_skew_are_tolerated(client, signing_key):
    now = int(time.time())
    token = clerk_token(signing_key, SOLO, iat=now + 2, nbf=now + 2, exp=now - 2)
    assert exchange(client, token).status_code == 200


def test_audience_is_accepted_when_it_matches(clerk_client, signing_key):
    client = clerk_client(CLERK_AUDIENCE="causeloop-api")
    token = clerk_token(signing_key, SOLO, aud=["other-api", "causeloop-api"])
    assert exchange(client, token).status_code == 200


def test_authorized_party_in_the_list_is_accepted(clerk_client, signing_key):
    client = clerk_client(CLERK_AUTHORIZED_PARTIES=["http://localhost:3000", FRONTEND])
    assert exchange(client, clerk_token(signing_key, SOLO)).status_code == 200


def test_jwks_is_fetched_once_and_cached(client, signing_key, jwks):
    for _ in range(3):
        assert exchange(client, clerk_token(signing_key, SOLO)).status_code == 200
    assert jwks.hits == 1


def test_rotated_signing_key_is_picked_up_by_one_refetch(client, signing_key, other_key, jwks):
    assert exchange(client, clerk_token(signing_key, SOLO)).status_code == 200
    jwks.keys = [signing_key, other_key]
    assert exchange(client, clerk_token(other_key, SOLO)).status_code == 200
    assert jwks.hits == 2


# --- refused tokens ------------------------------------------------------------------------


def test_expired_token_is_refused(client, signing_key):
    now = int(time.time())
    token = clerk_token(signing_key, SOLO, iat=now - 120, nbf=now - 120, exp=now - 60)
    assert_refused(exchange(client, token), token, "exp")


def test_token_without_exp_is_refused(client, signing_key):
    token = clerk_token(signing_key, SOLO, exp=None)
    assert_refused(exchange(client, token), token, "exp")


def test_not_yet_valid_token_is_refused(client, signing_key):
    now = int(time.time())
    token = clerk_token(signing_key, SOLO, iat=now - 1, nbf=now + 60, exp=now + 120)
    assert_refused(exchange(client, token), token, "nbf")


def test_wrong_issuer_is_refused(client, signing_key):
    token = clerk_token(signing_key, SOLO, iss="https://clerk.someone-else.test")
    assert_refused(exchange(client, token), token, "iss")


def test_wrong_audience_is_refused(clerk_client, signing_key):
    client = clerk_client(CLERK_AUDIENCE="causeloop-api")
    token = clerk_token(signing_key, SOLO, aud="another-api")
    assert_refused(exchange(client, token), token, "aud")


def test_missing_audience_is_refused_when_one_is_required(clerk_client, signing_key):
    client = clerk_client(CLERK_AUDIENCE="causeloop-api")
    token = clerk_token(signing_key, SOLO)
    assert_refused(exchange(client, token), token, "aud")


def test_authorized_party_not_in_the_list_is_refused(clerk_client, signing_key):
    client = clerk_client(CLERK_AUTHORIZED_PARTIES=["http://localhost:3000"])
    token = clerk_token(signing_key, SOLO, azp="https://evil.test")
    assert_refused(exchange(client, token), token, "azp")


def test_missing_authorized_party_is_refused_when_a_list_is_set(clerk_client, signing_key):
    client = clerk_client(CLERK_AUTHORIZED_PARTIES=[FRONTEND])
    token = clerk_token(signing_key, SOLO, azp=None)
    assert_refused(exchange(client, token), token, "azp")


def test_signature_by_another_key_is_refused(client, signing_key, other_key):
    impostor = RSAKey.import_key(other_key.as_dict(private=True, kid=signing_key.kid))
    token = clerk_token(impostor, SOLO)
    assert_refused(exchange(client, token), token, "signature")


def test_unknown_kid_refetches_the_jwks_once_then_is_refused(client, signing_key, other_key, jwks):
    assert exchange(client, clerk_token(signing_key, SOLO)).status_code == 200
    assert jwks.hits == 1
    token = clerk_token(other_key, SOLO)
    assert_refused(exchange(client, token), token, "kid")
    assert jwks.hits == 2
    # A flood of made-up kids does not turn into a flood of JWKS requests.
    for _ in range(5):
        assert_refused(exchange(client, token), token, "kid")
    assert jwks.hits == 2


def test_unreachable_jwks_is_refused_at_once(clerk_client, signing_key):
    client = clerk_client(CLERK_JWKS_URL=f"http://127.0.0.1:{unused_port()}/jwks.json")
    token = clerk_token(signing_key, SOLO)
    assert_refused(exchange(client, token), token, "jwks")


def test_silent_jwks_is_refused_after_the_timeout_not_a_hang(clerk_client, signing_key):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = clerk_client(CLERK_JWKS_URL=f"http://127.0.0.1:{silent.getsockname()[1]}/jwks.json")
        token = clerk_token(signing_key, SOLO)
        started = time.monotonic()
        response = exchange(client, token)
        elapsed = time.monotonic() - started
    assert_refused(response, token, "jwks")
    assert elapsed < JWKS_TIMEOUT_S + 2


def test_alg_none_is_refused(client):
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(session_claims(SOLO))}."
    assert_refused(exchange(client, token), token, "alg")


def test_hs256_signed_with_the_public_key_is_refused(clerk_client, signing_key):
    """Key confusion: the RSA public key, used as an HMAC secret, must not verify anything."""
    pem = signing_key.as_pem(private=False)
    client = clerk_client(CLERK_JWKS_URL="", CLERK_JWT_KEY=pem.decode())
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': signing_key.kid})}.{b64(session_claims(SOLO))}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(signature)}"
    assert_refused(exchange(client, token), token, "alg")


def test_garbage_subject_token_is_refused(client):
    token = "not.a-jwt.at-all"
    assert_refused(exchange(client, token), token, "format")


def test_unknown_user_is_refused(client, signing_key):
    token = clerk_token(signing_key, STRANGER)
    assert_refused(exchange(client, token), token, "user")


def test_user_without_a_membership_is_refused(client, signing_key):
    token = clerk_token(signing_key, LONER)
    assert_refused(exchange(client, token), token, "membership")


def test_organization_not_linked_here_is_refused(client, signing_key):
    token = clerk_token(signing_key, SOLO, o={"id": "org_clerk_unknown", "rol": "admin"})
    assert_refused(exchange(client, token), token, "organization")


def test_user_not_in_the_active_organizations_workspaces_is_refused(client, signing_key):
    token = clerk_token(signing_key, SOLO, o={"id": ORG_B, "rol": "member"})
    assert_refused(exchange(client, token), token, "membership")


def test_several_memberships_without_an_organization_are_refused(client, signing_key):
    token = clerk_token(signing_key, MULTI)
    assert_refused(exchange(client, token), token, "membership")


def test_malformed_pem_key_stops_the_app_at_start(make_app):
    with pytest.raises(ConfigError, match="CLERK_JWT_KEY"):
        make_app(USE_MOCK=False, CLERK_JWT_KEY="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")


# --- flask provision ------------------------------------------------------------------------


def provision(app, *args):
    return app.test_cli_runner().invoke(args=["provision", *args])


def printed_ids(result):
    return {line.split(":")[0]: line.split()[1] for line in result.output.splitlines()}


OWNER_ARGS = ("--org", "Initech", "--clerk-org-id", "org_clerk_initech", "--workspace", "Initech Prod",
              "--clerk-user-id", "user_clerk_peter", "--email", "peter@initech.example")


@pytest.fixture
def real_app(make_real_app):
    return make_real_app()


def test_provision_creates_an_organization_workspace_and_owner(real_app):
    result = provision(real_app, *OWNER_ARGS)
    assert result.exit_code == 0, result.output
    ids = printed_ids(result)
    assert set(ids) == {"organization", "workspace", "user", "membership"}
    assert result.output.count("(created)") == 4
    with real_app.app_context(), db.connection_context():
        workspace = Workspace.get_by_id(ids["workspace"])
        assert workspace.name == "Initech Prod"
        assert workspace.organization.clerk_org_id == "org_clerk_initech"
        assert User.get_by_id(ids["user"]).clerk_user_id == "user_clerk_peter"
        assert Membership.get_by_id(ids["membership"]).role == "owner"


def test_provision_twice_creates_nothing_new(real_app):
    first = printed_ids(provision(real_app, *OWNER_ARGS))
    again = provision(real_app, *OWNER_ARGS)
    assert again.exit_code == 0, again.output
    assert printed_ids(again) == first
    assert again.output.count("(existing)") == 4
    with real_app.app_context(), db.connection_context():
        assert Organization.select().where(Organization.name == "Initech").count() == 1
        assert User.select().where(User.clerk_user_id == "user_clerk_peter").count() == 1


def test_provisioned_owner_can_sign_in_with_clerk(real_app, signing_key):
    ids = printed_ids(provision(real_app, *OWNER_ARGS))
    token = clerk_token(signing_key, "user_clerk_peter", o={"id": "org_clerk_initech", "rol": "admin"})
    response = exchange(real_app.test_client(), token)
    assert response.status_code == 200
    assert response.get_json()["workspace_id"] == ids["workspace"]
