"""The audit log: each recorded change writes exactly one entry (actor, target, request id) in
its own transaction, none when it fails; the log reads with filters and the keyset cursor,
exports as JSON Lines, and no route edits or deletes an entry."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MY_ACCOUNT, MY_RULE, MY_TOKEN, OTHER_WORKSPACE, SEED_WORKSPACE
from models import AuditEntry, Membership, User, db
from models.accounts import rank
from test_errors import assert_envelope

OWNER = "usr_test_owner_ws_01abc123"  # whom auth() signs in


def entries(app, workspace=SEED_WORKSPACE, **where):
    with app.app_context(), db.connection_context():
        query = AuditEntry.select().where(AuditEntry.workspace == workspace)
        for name, value in where.items():
            query = query.where(getattr(AuditEntry, name) == value)
        return list(query.order_by(AuditEntry.occurred_at, AuditEntry.id))


def add_member(app, user_id, role, workspace=SEED_WORKSPACE):
    with app.app_context(), db.connection_context():
        User.get_or_create(id=user_id, defaults={"email": f"{user_id}@example.test"})
        return Membership.create(id=Membership.next_id(), user=user_id, workspace=workspace, role=role).id


# (method, path, body, action, target type, target id or None: the created object's)
RECORDED = [
    ("post", "/v1/invitations", {"email": "new@example.test", "role": "viewer"}, "invitation.sent", "invitation", None),
    ("post", "/v1/invitations/inv_01abc123/resend", None, "invitation.resent", "invitation", "inv_01abc123"),
    ("delete", "/v1/invitations/inv_01abc123", None, "invitation.revoked", "invitation", "inv_01abc123"),
    ("patch", "/v1/members/mem_01abc456", {"role": "analyst"}, "member.role_changed", "member", "mem_01abc456"),
    ("delete", "/v1/members/mem_01abc456", None, "member.removed", "member", "mem_01abc456"),
    ("post", "/v1/issues/bulk", {"ids": ["iss_01abc123"], "op": "set_status", "value": "closed"},
     "issue.bulk_updated", "issue", None),
    ("post", "/v1/patterns/pat_01xyz789/merge", {"source_pattern_ids": ["pat_01xyz791"]}, "pattern.merged",
     "pattern", "pat_01xyz789"),
    ("post", "/v1/grouping-rules", {"conditions": {"source": "x"}, "action": {"pattern_id": "pat_01xyz789"}},
     "grouping_rule.created", "grouping_rule", None),
    ("patch", f"/v1/grouping-rules/{MY_RULE}", {"enabled": False}, "grouping_rule.updated", "grouping_rule", MY_RULE),
    ("delete", f"/v1/grouping-rules/{MY_RULE}", None, "grouping_rule.deleted", "grouping_rule", MY_RULE),
    ("post", "/v1/api-tokens", {"name": "ci", "scopes": ["issues:read"], "expires_in_days": 3}, "api_token.created",
     "api_token", None),
    ("post", f"/v1/api-tokens/{MY_TOKEN}/rotate", None, "api_token.rotated", "api_token", MY_TOKEN),
    ("delete", f"/v1/api-tokens/{MY_TOKEN}", None, "api_token.revoked", "api_token", MY_TOKEN),
    ("post", "/v1/service-accounts", {"name": "deployer"}, "service_account.created", "service_account", None),
    ("patch", f"/v1/service-accounts/{MY_ACCOUNT}", {"description": "x"}, "service_account.updated",
     "service_account", MY_ACCOUNT),
    ("delete", f"/v1/service-accounts/{MY_ACCOUNT}", None, "service_account.deleted", "service_account", MY_ACCOUNT),
]


@pytest.mark.parametrize("method,path,body,action,target_type,target_id", RECORDED,
                         ids=[row[3] for row in RECORDED])
def test_each_recorded_change_writes_exactly_one_entry(app, client, auth, grouping_rules, api_tokens, invitations,
                                                       method, path, body, action, target_type, target_id):
    headers = {**auth(), "X-Request-Id": "req-audit-probe", "User-Agent": "audit-probe/1.0"}
    before = {entry.id for entry in entries(app)}
    response = client.open(path, method=method.upper(), headers=headers, json=body)
    assert response.status_code < 300, response.get_json()
    new = [entry for entry in entries(app) if entry.id not in before]
    assert [entry.action for entry in new] == [action]
    entry = new[0]
    assert (entry.actor_type, entry.actor_id) == ("user", OWNER)
    assert entry.target_type == target_type
    assert entry.target_id == (target_id or (response.get_json() or {}).get("id"))
    assert (entry.request_id, entry.user_agent, entry.ip) == ("req-audit-probe", "audit-probe/1.0", "127.0.0.1")
    assert entry.id.startswith("aud_") and entry.occurred_at is not None
    text = json.dumps(entry.changes or {})
    assert "clp_" not in text and "secret" not in text  # never a secret


def test_a_change_that_fails_writes_no_entry(app, client, auth):
    headers = auth()
    before = len(entries(app, OTHER_WORKSPACE))
    with app.app_context(), db.connection_context():
        from app.auth import start_session
        from models import ROLE_SCOPES
        owner = start_session("usr_02def789", OTHER_WORKSPACE, ROLE_SCOPES["owner"])["access_token"]
    before = len(entries(app, OTHER_WORKSPACE))
    response = client.patch("/v1/members/mem_02def789", headers={"Authorization": f"Bearer {owner}"},
                            json={"role": "viewer"})
    assert_envelope(response, 422, "last_admin")
    rejected = client.post("/v1/patterns/pat_01xyz789/merge", headers=headers,
                           json={"source_pattern_ids": ["pat_01xyz789"]})
    assert rejected.status_code == 422
    assert len(entries(app, OTHER_WORKSPACE)) == before
    assert not entries(app, action="pattern.merged")


def test_a_service_account_is_the_actor_of_what_its_token_does(app, client, api_tokens):
    token = api_tokens["tok_01abc124"]
    response = client.post("/v1/issues/bulk", headers={"Authorization": f"Bearer {token}"},
                           json={"ids": ["iss_01abc123"], "op": "set_status", "value": "closed"})
    assert response.status_code in (200, 403)
    # The probe token holds issues:read and ingest:write only: a refusal, so nothing recorded.
    assert not entries(app, action="issue.bulk_updated")


def test_sign_in_and_sign_out_are_recorded_with_the_user_as_actor(app, client):
    tokens = client.post("/v1/auth/exchange", json={"subject_token": "x"}).get_json()
    client.post("/v1/auth/revoke", json={"refresh_token": tokens["refresh_token"]})
    client.post("/v1/auth/revoke", json={"refresh_token": tokens["refresh_token"]})  # a second time: nothing
    recorded = [(e.action, e.actor_id, e.actor_type) for e in entries(app) if e.action.startswith("auth.")]
    assert recorded == [("auth.signed_in", "usr_01abc456", "user"), ("auth.signed_out", "usr_01abc456", "user")]


def test_provisioning_from_the_cli_is_recorded_with_the_system_as_actor(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["provision", "--org", "Initech", "--workspace", "Initech Ops",
                                 "--clerk-user-id", "user_2initech", "--email", "boss@initech.test"])
    assert result.exit_code == 0, result.output
    with app.app_context(), db.connection_context():
        entry = AuditEntry.get(AuditEntry.action == "workspace.provisioned")
    assert (entry.actor_type, entry.actor_id) == ("system", "system")
    assert entry.changes["membership"]["state"] == "created"
    again = runner.invoke(args=["provision", "--org", "Initech", "--workspace", "Initech Ops",
                                "--clerk-user-id", "user_2initech", "--email", "boss@initech.test"])
    assert again.exit_code == 0
    with app.app_context(), db.connection_context():
        assert AuditEntry.select().where(AuditEntry.action == "workspace.provisioned").count() == 1


# -- reading ------------------------------------------------------------------------------------

def record_some(app, client, auth):
    headers = auth()
    for n in range(5):
        client.post("/v1/invitations", headers=headers, json={"email": f"p{n}@example.test", "role": "viewer"})
    return headers


def test_the_log_pages_newest_first_with_the_cursor(app, client, auth):
    headers = record_some(app, client, auth)
    seen, cursor = [], None
    while True:
        page = client.get("/v1/audit-log", headers=headers,
                          query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["page"]["next_cursor"]
        if not cursor:
            break
    assert seen == [entry.id for entry in reversed(entries(app))]


def test_the_log_filters_by_action_prefix_actor_target_and_time(app, client, auth):
    headers = record_some(app, client, auth)
    sent = entries(app, action="invitation.sent")

    def ids(**query):
        return [row["id"] for row in client.get("/v1/audit-log", headers=headers, query_string=query).get_json()["data"]]

    assert set(ids(action="invitation.")) == {entry.id for entry in sent}
    assert ids(action="invitation_") == []  # the prefix is literal: `_` is no wildcard
    assert set(ids(actor_id=OWNER)) >= {entry.id for entry in sent}
    assert ids(target_id=sent[0].target_id) == [sent[0].id]
    assert ids(since="2999-01-01T00:00:00Z") == []
    assert ids(until="2000-01-01T00:00:00Z") == []


def test_a_prefix_naming_several_actions_pages_them_together_newest_first(app, client, auth):
    headers = record_some(app, client, auth)
    invitation = client.get("/v1/invitations", headers=headers).get_json()["data"][0]
    client.delete(f"/v1/invitations/{invitation['id']}", headers=headers)
    family = [entry.id for entry in reversed(entries(app)) if entry.action.startswith("invitation.")]
    assert len({entry.action for entry in entries(app) if entry.id in family}) == 2
    seen, cursor = [], None
    while True:
        page = client.get("/v1/audit-log", headers=headers, query_string={
            "action": "Invitation.", "limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["page"]["next_cursor"]
        if not cursor:
            break
    assert seen == family


def test_the_export_streams_every_matching_entry_as_json_lines(app, client, auth):
    headers = record_some(app, client, auth)
    response = client.get("/v1/audit-log/export", headers=headers, query_string={"action": "invitation."})
    assert response.status_code == 200
    assert response.mimetype == "application/jsonl"
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [line["id"] for line in lines] == [entry.id for entry in entries(app, action="invitation.sent")]
    listed = client.get("/v1/audit-log", headers=headers, query_string={"action": "invitation."}).get_json()["data"]
    assert sorted(lines, key=lambda row: row["id"]) == sorted(listed, key=lambda row: row["id"])


@pytest.mark.parametrize("role", ["viewer", "analyst"])
def test_reading_the_log_needs_audit_read(client, auth, role):
    for path in ("/v1/audit-log", "/v1/audit-log/export"):
        assert_envelope(client.get(path, headers=auth(role)), 403, "forbidden")


def test_another_workspaces_entries_are_never_shown(app, client, auth):
    record_some(app, client, auth)
    theirs = client.get("/v1/audit-log", headers=auth("owner", OTHER_WORKSPACE)).get_json()["data"]
    assert all(row["id"] not in {entry.id for entry in entries(app)} for row in theirs)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
def test_no_route_edits_or_deletes_an_entry(app, client, auth, method):
    headers = record_some(app, client, auth)
    entry = entries(app)[0]
    before = len(entries(app))
    for path in ("/v1/audit-log", f"/v1/audit-log/{entry.id}"):
        assert client.open(path, method=method, headers=headers, json={}).status_code in (404, 405)
    assert len(entries(app)) == before


# -- random member operations against the log ------------------------------------------------------

ADMINS = ("tenant_admin", "owner")
ACTOR = "mem_02def789"  # the second seed workspace's owner acts throughout
OPERATIONS = st.lists(st.tuples(st.sampled_from(["change", "remove", "invite"]), st.integers(0, 3),
                                st.sampled_from(["viewer", "analyst", "tenant_admin", "owner"])),
                      min_size=1, max_size=10)


def expected_outcome(roles, invited, operation, target, role):
    """(status, audit action or None) as the rules say, updating the model of the workspace."""
    mine = rank(roles[ACTOR])
    if operation == "invite":
        if rank(role) > mine:
            return 403, None
        if role in invited:
            return 409, None
        invited.add(role)
        return 201, "invitation.sent"
    if target not in roles:
        return 404, None
    if rank(roles[target]) > mine or (operation == "change" and rank(role) > mine):
        return 403, None
    last_admin = roles[target] in ADMINS and [m for m, r in roles.items() if r in ADMINS] == [target]
    if operation == "remove":
        if last_admin:
            return 422, None
        del roles[target]
        return 204, "member.removed"
    if roles[target] == role:
        return 200, None
    if last_admin and role not in ADMINS:
        return 422, None
    roles[target] = role
    return 200, "member.role_changed"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_random_member_operations_leave_one_entry_per_change_and_none_per_refusal(app, client, operations):
    from app.auth import start_session
    from models import ROLE_SCOPES, Invitation

    with app.app_context(), db.connection_context():
        Membership.delete().where((Membership.workspace == OTHER_WORKSPACE) & (Membership.id != ACTOR)).execute()
        Membership.get_or_create(id=ACTOR, defaults={"user": "usr_02def789", "workspace": OTHER_WORKSPACE,
                                                     "role": "owner"})  # an earlier example may have removed it
        Membership.update(role="owner").where(Membership.id == ACTOR).execute()
        Invitation.delete().where(Invitation.workspace == OTHER_WORKSPACE).execute()
        AuditEntry.delete().where(AuditEntry.workspace == OTHER_WORKSPACE).execute()
        headers = {"Authorization": "Bearer " + start_session("usr_02def789", OTHER_WORKSPACE,
                                                              ROLE_SCOPES["owner"])["access_token"]}
    members = [add_member(app, f"usr_random_{n}", "analyst", OTHER_WORKSPACE) for n in range(3)] + [ACTOR]
    roles = {member: "analyst" for member in members[:3]} | {ACTOR: "owner"}
    invited, expected = set(), ["auth.signed_in"]
    for operation, index, role in operations:
        target = members[index]
        if operation == "invite":  # one address per role, so repeats meet the pending invitation
            response = client.post("/v1/invitations", headers=headers,
                                   json={"email": f"{role}@invitee.test", "role": role})
        elif operation == "remove":
            response = client.delete(f"/v1/members/{target}", headers=headers)
        else:
            response = client.patch(f"/v1/members/{target}", headers=headers, json={"role": role})
        status, action = expected_outcome(roles, invited, operation, target, role)
        assert response.status_code == status, (operation, target, role, response.get_json())
        expected += [action] if action else []
        if roles.get(ACTOR) not in ADMINS:  # the actor removed or demoted themselves: done
            break
    with app.app_context(), db.connection_context():
        recorded = [entry.action for entry in AuditEntry.select().where(AuditEntry.workspace == OTHER_WORKSPACE)]
        assert sorted(recorded) == sorted(expected)  # ids order entries only to the millisecond
        assert Membership.select().where((Membership.workspace == OTHER_WORKSPACE)
                                         & Membership.role.in_(ADMINS)).count() >= 1
