"""API tokens and service accounts, through real HTTP: create, use, rotate, revoke, and every
way a token stops working."""
import datetime

import pytest

from app.auth import EXPIRATION_HEADER, current_principal
from app.extensions import protector
from conftest import MY_ACCOUNT, MY_TOKEN, OTHER_WORKSPACE, SEED_WORKSPACE, THEIR_TOKEN
from models import MODELS, ApiToken, Membership, db, utcnow
from models.tokens import BASE62, SCOPE_DESCRIPTIONS, TOKEN_SCOPES, well_formed
from test_errors import assert_envelope

INGEST = {"title": "Checkout timed out", "source": "ci", "external_id": "run-1"}
A_MONTH = {"expires_in_days": 30}


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def create_token(client, headers, name="ci", scopes=("ingest:write",), **fields):
    response = client.post("/v1/api-tokens", headers=headers,
                           json={"name": name, "scopes": list(scopes), **A_MONTH, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def create_account_token(client, headers, name="deploy", scopes=("issues:read",)):
    account = client.post("/v1/service-accounts", headers=headers, json={"name": name}).get_json()
    response = client.post(f"/v1/service-accounts/{account['id']}/tokens", headers=headers,
                           json={"name": "ci", "scopes": list(scopes), **A_MONTH})
    assert response.status_code == 201, response.get_json()
    return account, response.get_json()


def ingest(client, secret, **environ):
    return client.post("/v1/ingest/events", headers=bearer(secret), json=INGEST, environ_base=environ)


def test_a_personal_token_ingests_rotates_and_is_revoked(client, auth):
    headers = auth()
    created = create_token(client, headers)
    used = ingest(client, created["token"])
    assert used.status_code == 202
    assert used.headers[EXPIRATION_HEADER] == created["expires_at"]

    rotated = client.post(f"/v1/api-tokens/{created['id']}/rotate", headers=headers)
    assert rotated.status_code == 200
    new = rotated.get_json()
    assert (new["id"], new["expires_at"], new["scopes"]) == (created["id"], created["expires_at"], created["scopes"])
    assert_envelope(ingest(client, created["token"]), 401, "unauthorized")
    assert ingest(client, new["token"]).status_code == 202

    assert client.delete(f"/v1/api-tokens/{created['id']}", headers=headers).status_code == 204
    assert_envelope(ingest(client, new["token"]), 401, "unauthorized")
    assert client.get("/v1/api-tokens", headers=headers).get_json()["data"] == []


def test_secrets_are_typed_random_and_checksummed(client, auth):
    personal = create_token(client, auth())["token"]
    _, machine = create_account_token(client, auth())
    assert personal.startswith("clp_pat_") and machine["token"].startswith("clp_sat_")
    for secret in (personal, machine["token"]):
        assert len(secret) == 46 and set(secret[8:]) <= set(BASE62) and well_formed(secret)
    assert personal[-4:] == client.get("/v1/api-tokens", headers=auth()).get_json()["data"][0]["last_four"]


def test_an_expired_token_is_unauthorized(app, client, auth):
    created = create_token(client, auth())
    with app.app_context(), db.connection_context():
        ApiToken.update(expires_at=utcnow() - datetime.timedelta(seconds=1)).execute()
    assert_envelope(ingest(client, created["token"]), 401, "unauthorized")
    assert client.get("/v1/api-tokens", headers=auth()).get_json()["data"][0]["status"] == "expired"


def one_changed(secret, position):
    index = position % len(secret)
    return secret[:index] + ("a" if secret[index] != "a" else "b") + secret[index + 1:]


@pytest.mark.parametrize("position", [5, 8, 20, -1])  # the type, the random part, the checksum
def test_a_token_with_one_character_changed_is_refused_without_a_lookup(client, auth, monkeypatch, position):
    secret = create_token(client, auth())["token"]
    typo = one_changed(secret, position)

    def no_lookup(token_hash):
        raise AssertionError("the database was asked about a token its checksum refuses")

    monkeypatch.setattr(ApiToken, "_lookup", staticmethod(no_lookup))
    assert_envelope(ingest(client, typo), 401, "unauthorized")
    with pytest.raises(AssertionError):  # the genuine secret does reach the lookup
        ApiToken.authenticate(secret, "127.0.0.1")


def test_a_token_is_refused_from_outside_its_networks(client, auth):
    created = create_token(client, auth(), allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"])
    assert created["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert ingest(client, created["token"], REMOTE_ADDR="10.20.30.40").status_code == 202
    assert ingest(client, created["token"], REMOTE_ADDR="2001:db8::1").status_code == 202
    assert_envelope(ingest(client, created["token"], REMOTE_ADDR="192.0.2.7"), 401, "unauthorized")


def test_a_token_never_asks_for_more_than_the_creators_role(app, client, auth):
    headers = auth("viewer")
    with app.app_context(), db.connection_context():
        before = ApiToken.select().count()
    response = client.post("/v1/api-tokens", headers=headers,
                           json={"name": "ci", "scopes": ["issues:read", "issues:write"], **A_MONTH})
    error = assert_envelope(response, 403, "forbidden")
    assert "issues:write" in error["message"] and "scopes" in error["details"]
    with app.app_context(), db.connection_context():
        assert ApiToken.select().count() == before
    assert create_token(client, headers, scopes=["issues:read"])["scopes"] == ["issues:read"]


def test_a_personal_token_is_cut_to_its_members_current_role(app, client, auth):
    secret = create_token(client, auth(), scopes=["issues:read", "issues:write"])["token"]
    assert client.post("/v1/issues", headers=bearer(secret), json={"title": "x"}).status_code == 201
    with app.app_context(), db.connection_context():
        Membership.update(role="viewer").where(Membership.user == f"usr_test_owner_{SEED_WORKSPACE}").execute()
    assert_envelope(client.post("/v1/issues", headers=bearer(secret), json={"title": "x"}), 403, "forbidden")
    assert client.get("/v1/issues", headers=bearer(secret)).status_code == 200


def test_a_personal_token_stops_when_its_member_leaves(app, client, auth):
    secret = create_token(client, auth())["token"]
    with app.app_context(), db.connection_context():
        Membership.delete().where(Membership.user == f"usr_test_owner_{SEED_WORKSPACE}").execute()
    assert_envelope(ingest(client, secret), 401, "unauthorized")


def test_a_service_account_token_outlives_the_member_who_made_it(app, client, token_for):
    admin = bearer(token_for("tenant_admin", user_id="usr_leaving_admin"))
    account, created = create_account_token(client, admin, scopes=["issues:read", "ingest:write"])
    with app.app_context(), db.connection_context():
        Membership.delete().where(Membership.user == "usr_leaving_admin").execute()
    assert_envelope(client.get("/v1/issues", headers=admin), 401, "unauthorized")
    assert client.get("/v1/issues", headers=bearer(created["token"])).status_code == 200
    assert ingest(client, created["token"]).status_code == 202
    assert account["created_by"] == "usr_leaving_admin"


def test_deleting_a_service_account_or_its_token_ends_the_token_at_once(client, auth):
    headers = auth()
    account, first = create_account_token(client, headers)
    second = client.post(f"/v1/service-accounts/{account['id']}/tokens", headers=headers,
                         json={"name": "second", "scopes": ["issues:read"], **A_MONTH}).get_json()
    shown = client.get(f"/v1/service-accounts/{account['id']}", headers=headers).get_json()
    assert [token["id"] for token in shown["tokens"]] == [first["id"], second["id"]]
    assert "token" not in shown["tokens"][0]

    assert client.delete(f"/v1/service-accounts/{account['id']}/tokens/{first['id']}", headers=headers).status_code == 204
    assert_envelope(client.get("/v1/issues", headers=bearer(first["token"])), 401, "unauthorized")
    assert client.get("/v1/issues", headers=bearer(second["token"])).status_code == 200
    assert client.delete(f"/v1/service-accounts/{account['id']}", headers=headers).status_code == 204
    assert_envelope(client.get("/v1/issues", headers=bearer(second["token"])), 401, "unauthorized")


def test_the_plaintext_is_never_shown_again_nor_stored(app, client, auth):
    headers = auth()
    created = create_token(client, headers)
    rotated = client.post(f"/v1/api-tokens/{created['id']}/rotate", headers=headers).get_json()
    account, machine = create_account_token(client, headers)
    secrets = [created["token"], rotated["token"], machine["token"]]
    later = [client.get("/v1/api-tokens", headers=headers), client.get("/v1/service-accounts", headers=headers),
             client.get(f"/v1/service-accounts/{account['id']}", headers=headers),
             ingest(client, rotated["token"]), client.get("/v1/issues", headers=bearer(machine["token"]))]
    for response in later:
        text = response.get_data(as_text=True) + str(response.headers)
        assert not any(secret in text or secret[8:-6] in text for secret in secrets)
    with app.app_context(), db.connection_context():
        stored = " ".join(str(row) for model in MODELS for row in model.select().tuples())
        token_rows = " ".join(str(row) for row in ApiToken.select().tuples())
    assert not any(secret[8:] in stored for secret in secrets)
    assert rotated["last_four"] in token_rows  # the scan does see the token table


def test_last_used_at_moves_at_most_once_a_minute(app, client, auth):
    created = create_token(client, auth())

    def last_used():
        with app.app_context(), db.connection_context():
            return ApiToken.get_by_id(created["id"]).last_used_at

    assert created["last_used_at"] is None
    ingest(client, created["token"])
    first = last_used()
    assert first is not None
    with app.app_context(), db.connection_context():
        ApiToken.update(last_used_at=utcnow() - datetime.timedelta(seconds=30)).execute()
    recent = last_used()
    ingest(client, created["token"])
    assert last_used() == recent  # within the minute: no write
    with app.app_context(), db.connection_context():
        ApiToken.update(last_used_at=utcnow() - datetime.timedelta(seconds=61)).execute()
    ingest(client, created["token"])
    assert last_used() >= utcnow() - datetime.timedelta(seconds=5)


def test_api_tokens_cannot_manage_tokens(client, auth, api_tokens):
    secret = create_token(client, auth(), scopes=TOKEN_SCOPES)["token"]
    for method, path in [("get", "/v1/api-tokens"), ("post", "/v1/api-tokens"),
                         ("post", f"/v1/api-tokens/{MY_TOKEN}/rotate"), ("delete", f"/v1/api-tokens/{MY_TOKEN}"),
                         ("get", "/v1/service-accounts"), ("post", f"/v1/service-accounts/{MY_ACCOUNT}/tokens")]:
        response = client.open(path, method=method.upper(), headers=bearer(secret),
                               json={"name": "x", "scopes": ["issues:read"], **A_MONTH})
        assert_envelope(response, 403, "forbidden")


@pytest.mark.parametrize("role", ["analyst", "viewer", "read_only"])
def test_service_accounts_need_tokens_admin(client, auth, role):
    response = client.post("/v1/service-accounts", headers=auth(role), json={"name": "x"})
    assert assert_envelope(response, 403, "forbidden")["details"] == {"required_scope": "tokens:admin"}


def test_names_are_unique_per_owner(client, auth):
    create_token(client, auth())
    again = client.post("/v1/api-tokens", headers=auth(), json={"name": "ci", "scopes": ["ingest:write"], **A_MONTH})
    assert "name" in assert_envelope(again, 409, "conflict")["details"]
    assert create_token(client, auth("analyst"))["name"] == "ci"  # another member's names are theirs
    client.post("/v1/service-accounts", headers=auth(), json={"name": "deploy"})
    dup = client.post("/v1/service-accounts", headers=auth(), json={"name": "deploy"})
    assert_envelope(dup, 409, "conflict")


def test_renaming_a_service_account_onto_another_name_is_a_conflict(client, auth):
    headers = auth()
    first = client.post("/v1/service-accounts", headers=headers, json={"name": "deploy"}).get_json()
    client.post("/v1/service-accounts", headers=headers, json={"name": "backup"})
    renamed = client.patch(f"/v1/service-accounts/{first['id']}", headers=headers, json={"name": "backup"})
    assert_envelope(renamed, 409, "conflict")
    described = client.patch(f"/v1/service-accounts/{first['id']}", headers=headers,
                             json={"name": "deploy", "description": "Deploys from CI"})
    assert described.get_json()["description"] == "Deploys from CI"


def test_another_members_tokens_do_not_exist_for_you(client, auth, api_tokens):
    for response in (client.post(f"/v1/api-tokens/{MY_TOKEN}/rotate", headers=auth("analyst")),
                     client.delete(f"/v1/api-tokens/{MY_TOKEN}", headers=auth("analyst")),
                     client.delete(f"/v1/service-accounts/{MY_ACCOUNT}/tokens/{MY_TOKEN}", headers=auth())):
        assert_envelope(response, 404, "not_found")
    assert ingest(client, api_tokens[MY_TOKEN]).status_code == 202


def test_a_token_sees_only_its_own_workspace(client, api_tokens):
    response = client.get("/v1/issues/iss_02def100", headers=bearer(api_tokens[MY_TOKEN]))
    assert_envelope(response, 404, "not_found")
    theirs = client.get("/v1/issues?limit=100", headers=bearer(api_tokens[THEIR_TOKEN])).get_json()["data"]
    assert theirs and all(issue["id"].startswith("iss_02") for issue in theirs)


@pytest.mark.parametrize("body,field", [
    ({"scopes": ["issues:read"]}, "expires_at"),
    ({"scopes": ["issues:read"], "expires_in_days": 30, "expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
    ({"scopes": ["issues:read"], "expires_in_days": 367}, "expires_in_days"),
    ({"scopes": ["issues:read"], "expires_in_days": 0}, "expires_in_days"),
    ({"scopes": ["issues:read"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"scopes": ["issues:read"], "expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
    ({"scopes": [], **A_MONTH}, "scopes"),
    ({"scopes": ["issues:delete"], **A_MONTH}, "scopes.0"),
    ({"scopes": ["tokens:admin"], **A_MONTH}, "scopes.0"),
    ({"scopes": ["connectors:admin"], **A_MONTH}, "scopes.0"),
    ({"scopes": ["issues:read"], "allowed_cidrs": ["10.0.0.0/33"], **A_MONTH}, "allowed_cidrs.0"),
    ({"scopes": ["issues:read"], "allowed_cidrs": ["example.com"], **A_MONTH}, "allowed_cidrs.0"),
    ({"scopes": ["issues:read"], "last_four": "abcd", **A_MONTH}, "last_four"),
])
def test_bad_input_is_a_validation_error_naming_the_field(client, auth, body, field):
    response = client.post("/v1/api-tokens", headers=auth(), json={"name": "ci", **body})
    assert field in assert_envelope(response, 400, "validation_error")["details"]


def test_the_scope_catalogue_describes_every_scope(client, auth):
    from models import ALL_SCOPES

    response = client.get("/v1/api-tokens/scopes", headers=auth("viewer"))
    catalogue = {entry["scope"]: entry for entry in response.get_json()["data"]}
    assert set(catalogue) == set(ALL_SCOPES) == set(SCOPE_DESCRIPTIONS)
    assert all(entry["description"] for entry in catalogue.values())
    assert {scope for scope, entry in catalogue.items() if not entry["grantable"]} == {
        "tokens:admin", "connectors:admin", "webhooks:admin", "members:write", "members:admin"}


def test_sessions_do_not_carry_the_expiry_header(client, auth):
    assert EXPIRATION_HEADER not in client.get("/v1/issues", headers=auth()).headers


@pytest.mark.parametrize("kind", ["user", "api_token", "service_account"])
def test_every_caller_is_one_kind_of_principal(app, auth, api_tokens, kind):
    from conftest import MY_ACCOUNT_TOKEN

    headers = {"user": auth(), "api_token": bearer(api_tokens[MY_TOKEN]),
               "service_account": bearer(api_tokens[MY_ACCOUNT_TOKEN])}[kind]
    with app.test_request_context("/v1/issues", headers=headers):
        protector.acquire_token()
        principal = current_principal()
        user_id, principal_id = {"user": (f"usr_test_owner_{SEED_WORKSPACE}",) * 2,
                                 "api_token": (f"usr_test_owner_{SEED_WORKSPACE}", MY_TOKEN),
                                 "service_account": (None, MY_ACCOUNT)}[kind]
        assert (principal.kind, principal.id, principal.user_id, principal.workspace_id) == (
            kind, principal_id, user_id, SEED_WORKSPACE)
        assert "issues:read" in principal.scopes and principal.display
        if not db.is_closed():
            db.close()
    assert OTHER_WORKSPACE != principal.workspace_id
