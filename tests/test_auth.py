"""Sign-in and bearer tokens: exchange, refresh rotation, revocation, and refused tokens."""
import base64
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from conftest import OTHER_WORKSPACE, TEST_SECRET


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def signed(claims, secret=TEST_SECRET, alg="HS256"):
    return jwt.encode({"alg": alg}, claims, OctKey.import_key(secret), algorithms=[alg])


def claims_of(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def exchange(client):
    return client.post("/v1/auth/exchange", json={"subject_token": "anything"}).get_json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("body", [{}, {"subject_token": ""}, {"subject_token": None}])
def test_exchange_needs_a_subject_token(client, body):
    response = client.post("/v1/auth/exchange", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"
    assert "subject_token" in response.get_json()["error"]["details"]


def test_exchange_outside_mock_mode_says_clerk_is_not_configured(make_app):
    client = make_app(USE_MOCK=False).test_client()
    response = client.post("/v1/auth/exchange", json={"subject_token": "eyJ.fake.jwt"})
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "invalid_grant"
    assert "Clerk" in error["message"]


def test_access_token_claims(client):
    body = exchange(client)
    claims = claims_of(body["access_token"])
    assert claims["sub"] == "usr_01abc456"
    assert claims["workspace_id"] == "ws_01abc123"
    assert claims["scope"] == body["scope"]
    assert claims["exp"] - claims["iat"] == 259200
    assert claims["jti"]


def test_me_describes_the_caller(client):
    token = exchange(client)["access_token"]
    body = client.get("/v1/me", headers=bearer(token)).get_json()
    assert body["user"]["id"] == "usr_01abc456"
    assert body["workspace"]["id"] == "ws_01abc123"
    assert body["role"] == "owner"
    assert "members:write" in body["scopes"]


def refused_tokens(client):
    good = exchange(client)["access_token"]
    header, payload, signature = good.split(".")
    claims = claims_of(good)
    now = int(time.time())
    tampered_claims = dict(claims, workspace_id=OTHER_WORKSPACE)
    return {
        "garbage": "not-a-jwt",
        "expired": signed(dict(claims, iat=now - 7200, exp=now - 3600)),
        "tampered": f"{header}.{b64(tampered_claims)}.{signature}",
        "alg_none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong_alg": signed(claims, alg="HS512"),
        "wrong_secret": signed(claims, secret="another-secret-of-sufficient-length-123456"),
        "no_exp": signed({k: v for k, v in claims.items() if k != "exp"}),
        "unknown_session": signed(dict(claims, sid="ses_doesnotexist")),
    }


@pytest.mark.parametrize("kind", ["garbage", "expired", "tampered", "alg_none", "wrong_alg",
                                  "wrong_secret", "no_exp", "unknown_session"])
def test_refused_token_is_unauthorized(client, kind):
    token = refused_tokens(client)[kind]
    response = client.get("/v1/issues", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["", "Bearer", "Basic dXNlcjpwYXNz", "Bearer a b c"])
def test_missing_or_malformed_header_is_unauthorized(client, header):
    response = client.get("/v1/issues", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_viewer_cannot_create(client, auth):
    response = client.post("/v1/issues", headers=auth("viewer"), json={"title": "nope"})
    assert response.status_code == 403
    assert response.get_json()["error"]["details"]["required_scope"] == "issues:write"


def test_token_scope_never_exceeds_the_members_current_role(app, client, auth):
    from models import Membership, db

    headers = auth("analyst")
    with app.app_context(), db.connection_context():
        Membership.update(role="viewer").where(Membership.role == "analyst").execute()
    response = client.post("/v1/issues", headers=headers, json={"title": "demoted"})
    assert response.status_code == 403


def test_refresh_rotates_both_tokens(client):
    first = exchange(client)
    response = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    second = response.get_json()
    assert set(second) == set(first)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert client.get("/v1/issues", headers=bearer(second["access_token"])).status_code == 200


def test_reused_refresh_token_revokes_the_family(client):
    first = exchange(client)
    second = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    replay = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert replay.get_json()["error"]["code"] == "invalid_grant"
    # The thief's replay also ends the legitimate holder's session.
    assert client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401
    assert client.get("/v1/issues", headers=bearer(second["access_token"])).status_code == 401


def test_unknown_refresh_token_is_invalid_grant(client):
    response = client.post("/v1/auth/refresh", json={"refresh_token": "clp_refresh_madeup"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_grant"


def test_revoke_logs_out(client):
    tokens = exchange(client)
    assert client.post("/v1/auth/revoke", json={"refresh_token": tokens["refresh_token"]}).status_code == 200
    assert client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    assert client.get("/v1/issues", headers=bearer(tokens["access_token"])).status_code == 401


def test_revoke_of_unknown_token_is_still_ok(client):
    response = client.post("/v1/auth/revoke", json={"refresh_token": "clp_refresh_unknown"})
    assert response.status_code == 200


def test_surrounding_whitespace_around_the_token_is_ignored(app, client):
    """Some HTTP servers (the development server among them) keep a header's trailing space."""
    from app.auth import JWTBearerValidator

    token = exchange(client)["access_token"]
    with app.app_context():
        assert JWTBearerValidator().authenticate_token(token + " ") is not None
        assert JWTBearerValidator().authenticate_token(token + "x") is None


def test_every_401_carries_a_bearer_challenge(client):
    """RFC 9110: a 401 names its challenge, the token endpoints' invalid_grant included."""
    response = client.post("/v1/auth/refresh", json={"refresh_token": "clp_refresh_madeup"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_exchange_signs_in_to_another_of_the_callers_workspaces(client):
    body = client.post("/v1/auth/exchange", json={"subject_token": "x", "workspace_id": OTHER_WORKSPACE}).get_json()
    assert body["workspace_id"] == OTHER_WORKSPACE
    me = client.get("/v1/me", headers=bearer(body["access_token"])).get_json()
    assert (me["workspace"]["id"], me["role"]) == (OTHER_WORKSPACE, "viewer")
    assert client.post("/v1/issues", headers=bearer(body["access_token"]), json={"title": "x"}).status_code == 403


@pytest.mark.parametrize("workspace_id", ["ws_01nowhere", "ws_test_not_mine"])
def test_exchange_refuses_a_workspace_the_caller_is_not_a_member_of(app, client, workspace_id):
    response = client.post("/v1/auth/exchange", json={"subject_token": "x", "workspace_id": workspace_id})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_grant"


def test_me_lists_every_workspace_of_the_caller_with_its_role(client):
    me = client.get("/v1/me", headers=bearer(exchange(client)["access_token"])).get_json()
    assert [(w["id"], w["role"]) for w in me["workspaces"]] == [("ws_01abc123", "owner"), (OTHER_WORKSPACE, "viewer")]
