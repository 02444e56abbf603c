"""Members, roles and invitations through real HTTP: the invitation lifecycle with Clerk-style
session tokens signed by the test's own key, the rank and last-admin rules, and removal
ending every credential at once."""
import datetime
import threading

import pytest
from joserfc.jwk import RSAKey

import fixtures
from conftest import OTHER_WORKSPACE, SEED_WORKSPACE
from models import Invitation, InvitationLink, Membership, User, db, schema
from test_clerk import ISSUER, clerk_token
from test_errors import assert_envelope
from test_owasp import database_unchanged

SEED_OWNER, OTHER_OWNER = "usr_01abc456", "usr_02def789"


@pytest.fixture(scope="module")
def clerk_key():
    return RSAKey.generate_key(2048, parameters={"kid": "ins_members_key"})


@pytest.fixture
def real_app(make_app, clerk_key):
    """Real (non-mock) mode: Clerk session tokens are verified against the test's own key."""
    app = make_app(USE_MOCK=False, CLERK_JWT_KEY=clerk_key.as_pem(private=False).decode(), CLERK_ISSUER=ISSUER)
    with app.app_context(), db.connection_context():
        schema.migrate()
        fixtures.load_seed(reset=True)
    return app


@pytest.fixture
def client(real_app):
    return real_app.test_client()


@pytest.fixture
def login(real_app):
    """A session token for a user (made a member with `role` first, if given)."""
    from app.auth import start_session

    def mint(user_id, workspace=SEED_WORKSPACE, role=None):
        with real_app.app_context(), db.connection_context():
            if role is not None:
                User.get_or_create(id=user_id, defaults={"email": f"{user_id}@example.test"})
                Membership.get_or_create(user=user_id, workspace=workspace,
                                         defaults={"id": Membership.next_id(), "role": role})
            member = Membership.find(user_id, workspace)
            return {"Authorization": "Bearer " + start_session(user_id, workspace, member.scopes)["access_token"]}

    return mint


def member_id(app, user_id, workspace=SEED_WORKSPACE):
    with app.app_context(), db.connection_context():
        return Membership.find(user_id, workspace).id


def invite(client, headers, email="new.person@example.test", role="analyst"):
    response = client.post("/v1/invitations", headers=headers, json={"email": email, "role": role})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def link_token(invitation):
    return invitation["accept_url"].split("token=", 1)[1]


def accept(client, key, token, email="new.person@example.test", sub="user_clerk_new"):
    return client.post("/v1/invitations/accept", json={
        "token": token, "subject_token": clerk_token(key, sub=sub, email=email, azp=None)})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_the_invitation_lifecycle_ends_with_every_credential_refused(real_app, client, login, clerk_key):
    owner = login(SEED_OWNER)
    invitation = invite(client, owner)
    assert invitation["status"] == "pending" and invitation["role"] == "analyst"
    with database_unchanged(real_app):
        mismatch = accept(client, clerk_key, link_token(invitation), email="someone.else@example.test")
    assert_envelope(mismatch, 403, "forbidden")

    accepted = accept(client, clerk_key, link_token(invitation))
    assert accepted.status_code == 200, accepted.get_json()
    tokens = accepted.get_json()
    member = bearer(tokens["access_token"])
    me = client.get("/v1/me", headers=member).get_json()
    assert (me["role"], me["user"]["email"]) == ("analyst", "new.person@example.test")

    # Within the role: an analyst writes issues, never roles.
    assert client.post("/v1/issues", headers=member, json={"title": "From the new analyst"}).status_code == 201
    mine = me["user"]["id"]
    their_membership = member_id(real_app, mine)
    assert_envelope(client.patch(f"/v1/members/{their_membership}", headers=member, json={"role": "owner"}),
                    403, "forbidden")
    personal = client.post("/v1/api-tokens", headers=member, json={
        "name": "ci", "scopes": ["issues:read"], "expires_in_days": 5}).get_json()["token"]

    promoted = client.patch(f"/v1/members/{their_membership}", headers=owner, json={"role": "tenant_admin"})
    assert promoted.get_json()["role"] == "tenant_admin"
    assert client.get("/v1/invitations", headers=member).status_code == 200  # the same token, at once

    demoted = client.patch(f"/v1/members/{their_membership}", headers=owner, json={"role": "viewer"})
    assert demoted.get_json()["role"] == "viewer"
    assert_envelope(client.post("/v1/issues", headers=member, json={"title": "x"}), 403, "forbidden")

    assert client.delete(f"/v1/members/{their_membership}", headers=owner).status_code == 204
    for headers in (member, bearer(personal)):
        assert_envelope(client.get("/v1/issues", headers=headers), 401, "unauthorized")
    assert_envelope(client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
                    401, "invalid_grant")
    listed = client.get("/v1/members", headers=owner).get_json()["data"]
    assert mine not in [row["user_id"] for row in listed]

    # The accepted link is spent, even for its own invitee.
    with database_unchanged(real_app):
        replay = accept(client, clerk_key, link_token(invitation))
    assert_envelope(replay, 401, "invalid_grant")


def test_an_expired_link_is_refused(real_app, client, login, clerk_key):
    invitation = invite(client, login(SEED_OWNER))
    with real_app.app_context(), db.connection_context():
        past = datetime.datetime(2020, 1, 1)
        InvitationLink.update(expires_at=past).execute()
        Invitation.update(expires_at=past).execute()
    listed = client.get("/v1/invitations", headers=login(SEED_OWNER)).get_json()["data"]
    assert [row["status"] for row in listed] == ["expired"]
    with database_unchanged(real_app):
        response = accept(client, clerk_key, link_token(invitation))
    assert "expired" in assert_envelope(response, 401, "invalid_grant")["message"]


@pytest.mark.parametrize("token", ["clp_inv_madeup", "not-even-a-link", "clp_refresh_x"])
def test_an_unknown_link_is_refused(real_app, client, clerk_key, token):
    with database_unchanged(real_app):
        assert_envelope(accept(client, clerk_key, token), 401, "invalid_grant")


def test_a_subject_token_not_signed_by_clerk_is_refused(real_app, client, login, clerk_key):
    invitation = invite(client, login(SEED_OWNER))
    forged = RSAKey.generate_key(2048, parameters={"kid": clerk_key.kid})
    with database_unchanged(real_app):
        response = accept(client, forged, link_token(invitation))
    assert "signature" in assert_envelope(response, 401, "invalid_grant")["message"]


def test_a_resent_invitation_has_a_fresh_link_and_the_old_one_still_works(real_app, client, login, clerk_key):
    owner = login(SEED_OWNER)
    first = invite(client, owner)
    resent = client.post(f"/v1/invitations/{first['id']}/resend", headers=owner).get_json()
    assert link_token(resent) != link_token(first)
    assert accept(client, clerk_key, link_token(first)).status_code == 200
    assert_envelope(accept(client, clerk_key, link_token(resent)), 401, "invalid_grant")  # once


def test_a_revoked_invitations_links_are_refused(real_app, client, login, clerk_key):
    owner = login(SEED_OWNER)
    invitation = invite(client, owner)
    assert client.delete(f"/v1/invitations/{invitation['id']}", headers=owner).status_code == 204
    assert_envelope(accept(client, clerk_key, link_token(invitation)), 401, "invalid_grant")


def test_inviting_a_member_is_a_conflict(real_app, client, login):
    owner = login(SEED_OWNER)
    with database_unchanged(real_app):
        response = client.post("/v1/invitations", headers=owner, json={"email": "DEV@acme.example", "role": "viewer"})
    assert_envelope(response, 409, "conflict")


def test_a_member_lists_the_workspaces_members(real_app, client, login):
    rows = client.get("/v1/members", headers=login("usr_viewer", role="viewer")).get_json()["data"]
    seed = next(row for row in rows if row["user_id"] == SEED_OWNER)
    assert seed == {"id": "mem_01abc456", "user_id": SEED_OWNER, "name": "Acme Developer",
                    "email": "dev@acme.example", "role": "owner", "status": "active",
                    "joined_at": seed["joined_at"]}


# -- the rank rule ------------------------------------------------------------------------------

@pytest.mark.parametrize("role,above", [("security_admin", "tenant_admin"), ("tenant_admin", "owner")])
def test_nobody_invites_above_their_own_role(real_app, client, login, role, above):
    headers = login(f"usr_{role}", role=role)
    with database_unchanged(real_app):
        response = client.post("/v1/invitations", headers=headers, json={"email": "climber@example.test",
                                                                         "role": above})
    assert_envelope(response, 403, "forbidden")


def test_a_tenant_admin_cannot_promote_to_owner_or_touch_an_owner(real_app, client, login):
    admin = login("usr_admin", role="tenant_admin")
    login("usr_viewer", role="viewer")
    viewer = member_id(real_app, "usr_viewer")
    with database_unchanged(real_app):
        for method, path, body in (("patch", f"/v1/members/{viewer}", {"role": "owner"}),
                                   ("patch", "/v1/members/mem_01abc456", {"role": "viewer"}),
                                   ("delete", "/v1/members/mem_01abc456", None)):
            assert_envelope(client.open(path, method=method.upper(), headers=admin, json=body), 403, "forbidden")


def test_role_changes_need_members_admin(real_app, client, login):
    login("usr_viewer", role="viewer")
    viewer = member_id(real_app, "usr_viewer")
    for role in ("analyst", "security_admin"):
        response = client.patch(f"/v1/members/{viewer}", headers=login(f"usr_{role}", role=role),
                                json={"role": "read_only"})
        assert assert_envelope(response, 403, "forbidden")["details"] == {"required_scope": "members:admin"}


# -- the last admin -----------------------------------------------------------------------------

def test_the_last_admin_cannot_demote_or_remove_themselves(real_app, client, login):
    owner = login(OTHER_OWNER, OTHER_WORKSPACE)
    with database_unchanged(real_app):
        demote = client.patch("/v1/members/mem_02def789", headers=owner, json={"role": "analyst"})
        leave = client.delete("/v1/members/mem_02def789", headers=owner)
    for response in (demote, leave):
        assert_envelope(response, 422, "last_admin")


def test_an_owner_may_step_down_while_another_admin_remains(real_app, client, login):
    owner = login(OTHER_OWNER, OTHER_WORKSPACE)
    login("usr_second_admin", OTHER_WORKSPACE, role="tenant_admin")
    response = client.patch("/v1/members/mem_02def789", headers=owner, json={"role": "analyst"})
    assert response.get_json()["role"] == "analyst"


def at_once(app, requests):
    """Send (headers, path, body) PATCHes from threads started together; their (status, code)s."""
    results, barrier = [None] * len(requests), threading.Barrier(len(requests))

    def send(index, headers, path, body):
        client = app.test_client()
        barrier.wait()
        response = client.patch(path, headers=headers, json=body)
        results[index] = (response.status_code, (response.get_json().get("error") or {}).get("code"))

    threads = [threading.Thread(target=send, args=(index, *request)) for index, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results, key=str)


def admins_of(app, workspace):
    with app.app_context(), db.connection_context():
        return Membership.select().where((Membership.workspace == workspace)
                                         & Membership.role.in_(("owner", "tenant_admin"))).count()


def test_two_admins_demoting_themselves_at_once_leave_one_admin(real_app, login):
    first = login(OTHER_OWNER, OTHER_WORKSPACE)
    second = login("usr_second_admin", OTHER_WORKSPACE, role="owner")
    theirs = member_id(real_app, "usr_second_admin", OTHER_WORKSPACE)
    results = at_once(real_app, [(first, "/v1/members/mem_02def789", {"role": "viewer"}),
                                 (second, f"/v1/members/{theirs}", {"role": "viewer"})])
    assert results == [(200, None), (422, "last_admin")]
    assert admins_of(real_app, OTHER_WORKSPACE) == 1


def test_two_admins_demoting_each_other_at_once_leave_one_admin(real_app, login):
    first = login(OTHER_OWNER, OTHER_WORKSPACE)
    second = login("usr_second_admin", OTHER_WORKSPACE, role="owner")
    theirs = member_id(real_app, "usr_second_admin", OTHER_WORKSPACE)
    results = at_once(real_app, [(first, f"/v1/members/{theirs}", {"role": "viewer"}),
                                 (second, "/v1/members/mem_02def789", {"role": "viewer"})])
    # The loser is a viewer by the time its turn comes: refused by the rank rule, or the last-admin one.
    assert results[0] == (200, None) and results[1] in ((403, "forbidden"), (422, "last_admin"))
    assert admins_of(real_app, OTHER_WORKSPACE) == 1


def test_removal_revokes_only_that_workspaces_credentials(real_app, client, login):
    # The seed user belongs to both seed workspaces; removed from the second, the first still works.
    here = login(SEED_OWNER)
    there = login(SEED_OWNER, OTHER_WORKSPACE)
    removed = client.delete(f"/v1/members/{member_id(real_app, SEED_OWNER, OTHER_WORKSPACE)}",
                            headers=login(OTHER_OWNER, OTHER_WORKSPACE))
    assert removed.status_code == 204
    assert_envelope(client.get("/v1/issues", headers=there), 401, "unauthorized")
    assert client.get("/v1/issues", headers=here).status_code == 200


# -- the invitation email, through a real SMTP server on loopback (conftest.smtp_server) ----------

def test_an_invitation_is_emailed_when_smtp_is_set(make_app, smtp_server, auth):
    inbox, url = smtp_server
    app = make_app(SMTP_URL=url, INVITATION_URL="https://app.causeloop.test/join")
    client = app.test_client()
    with app.app_context(), db.connection_context():
        from app.auth import start_session
        from models import ROLE_SCOPES
        token = start_session(SEED_OWNER, SEED_WORKSPACE, ROLE_SCOPES["owner"])["access_token"]
    sent = invite(client, bearer(token), email="Mailed@Example.test", role="viewer")
    assert sent["emailed"] is True and sent["accept_url"].startswith("https://app.causeloop.test/join?token=clp_inv_")
    resent = client.post(f"/v1/invitations/{sent['id']}/resend", headers=bearer(token)).get_json()
    assert [recipients for recipients, _ in inbox.messages] == [["mailed@example.test"]] * 2
    bodies = [message.get_content() for _, message in inbox.messages]
    assert sent["accept_url"] in bodies[0] and resent["accept_url"] in bodies[1]


def test_without_smtp_the_link_is_only_returned(client, login):
    assert invite(client, login(SEED_OWNER))["emailed"] is False
