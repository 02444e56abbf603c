"""Fixtures: an app on a fresh database (a temporary SQLite file, or the PostgreSQL server
named by DATABASE_URL), a test client, and real tokens for any role."""
import email
import email.policy
import os
import socket

import pytest

import fixtures
from app import create_app
from app.auth import start_session
from models import ROLE_SCOPES, ApiToken, Membership, ServiceAccount, User, db

TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TEST_DATABASE_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = TEST_DATABASE_URL.startswith(("postgres://", "postgresql://"))
SEED_WORKSPACE = "ws_01abc123"
OTHER_WORKSPACE = "ws_02def456"


def pytest_report_header(config):
    return f"database: {'PostgreSQL ' + TEST_DATABASE_URL if ON_POSTGRES else 'SQLite (temporary files)'}"


@pytest.fixture(scope="session")
def _postgres_schema():
    """On PostgreSQL, start the session from an empty schema (migrations then run once)."""
    if ON_POSTGRES:
        from models import make_database
        database = make_database(TEST_DATABASE_URL, pool_size=2)
        with database.connection_context():
            database.execute_sql("DROP SCHEMA IF EXISTS public CASCADE")
            database.execute_sql("CREATE SCHEMA public")
        database.close_all()


@pytest.fixture
def database_url(tmp_path, _postgres_schema):
    return TEST_DATABASE_URL if ON_POSTGRES else f"sqlite:///{tmp_path / 'causeloop.db'}"


@pytest.fixture
def make_app(database_url):
    """Build an app in mock mode on the test database, with config overrides."""
    databases = []

    def build(**overrides):
        settings = {"TESTING": True, "USE_MOCK": True, "DATABASE_URL": database_url,
                    "JWT_SECRET": TEST_SECRET, "RATE_LIMIT": "100000/minute", "WORKER": "external",
                    **overrides}
        app = create_app(settings)
        databases.append(db.obj)
        return app

    yield build
    if not db.is_closed():
        db.close()
    for database in databases:
        if hasattr(database, "close_all"):
            database.close_all()


@pytest.fixture
def app(make_app):
    app = make_app()
    if ON_POSTGRES:
        fixtures.load_seed(reset=True)
    return app


@pytest.fixture
def insecure_app(make_app):
    """Loopback receivers allowed (a webhook endpoint or Slack channel may name a local
    stand-in), links to a known app, a short sweep grace."""
    app = make_app(WEBHOOKS_ALLOW_INSECURE=True, APP_URL="https://app.causeloop.test/", WEBHOOK_SWEEP_S=0.1)
    if ON_POSTGRES:
        fixtures.load_seed(reset=True)
    return app


@pytest.fixture
def stand_ins():
    """stand_ins(Kind, *args): a local receiver (anything with close()), closed after the test."""
    made = []

    def make(kind, *args):
        made.append(kind(*args))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def client(app):
    return app.test_client()


def membership_id(user_id):
    """A membership id the router takes (`mem_` and up to 36 letters or digits)."""
    return "mem_" + "".join(char for char in user_id if char.isalnum())[-36:]


@pytest.fixture
def token_for(app):
    """A real access token (signed, with a live session) for a member of `workspace`."""

    def mint(role="owner", workspace=SEED_WORKSPACE, user_id=None):
        with app.app_context(), db.connection_context():
            user_id = user_id or f"usr_test_{role}_{workspace}"
            User.get_or_create(id=user_id, defaults={"email": f"{role}@example.test"})
            Membership.get_or_create(user=user_id, workspace=workspace,
                                     defaults={"id": membership_id(user_id), "role": role})
            return start_session(user_id, workspace, ROLE_SCOPES[role])["access_token"]

    return mint


@pytest.fixture
def auth(token_for):
    """Headers for a request as a member: auth() is the seed workspace's owner."""

    def headers(role="owner", workspace=SEED_WORKSPACE):
        return {"Authorization": f"Bearer {token_for(role, workspace)}"}

    return headers


MY_RULE, THEIR_RULE = "gru_01abc123", "gru_02def100"


@pytest.fixture
def grouping_rules(app):
    """One grouping rule in each seed workspace (the seed has none), with short fixed ids."""
    from models import GroupingRule

    with app.app_context(), db.connection_context():
        for rule_id, workspace, pattern in ((MY_RULE, SEED_WORKSPACE, "pat_01xyz789"),
                                            (THEIR_RULE, OTHER_WORKSPACE, "pat_02pqr111")):
            rule = GroupingRule.create_in(workspace, {
                "name": "Gateway timeouts", "conditions": {"match": {"field": "title", "type": "contains",
                                                                     "pattern": "gateway timeout"}},
                "action": {"pattern_id": pattern}})
            GroupingRule.update(id=rule_id).where(GroupingRule.id == rule.id).execute()
    return MY_RULE, THEIR_RULE


MY_TOKEN, THEIR_TOKEN = "tok_01abc123", "tok_02def100"
MY_ACCOUNT, THEIR_ACCOUNT = "sva_01abc123", "sva_02def100"
MY_ACCOUNT_TOKEN, THEIR_ACCOUNT_TOKEN = "tok_01abc124", "tok_02def101"


@pytest.fixture
def api_tokens(app):
    """In each seed workspace, with short fixed ids: a personal token of the owner that auth()
    signs in as, and a service account with one token. Returns their secrets by token id."""
    secrets = {}
    with app.app_context(), db.connection_context():
        for workspace, ids in ((SEED_WORKSPACE, (MY_TOKEN, MY_ACCOUNT, MY_ACCOUNT_TOKEN)),
                               (OTHER_WORKSPACE, (THEIR_TOKEN, THEIR_ACCOUNT, THEIR_ACCOUNT_TOKEN))):
            token_id, account_id, account_token_id = ids
            user_id = f"usr_test_owner_{workspace}"
            User.get_or_create(id=user_id, defaults={"email": "owner@example.test"})
            Membership.get_or_create(user=user_id, workspace=workspace,
                                     defaults={"id": membership_id(user_id), "role": "owner"})
            body = {"name": "Probe token", "scopes": ["issues:read", "ingest:write"], "expires_in_days": 30}
            personal = ApiToken.create_personal(user_id, workspace, body, ROLE_SCOPES["owner"])
            account = ServiceAccount.create_in(workspace, {"name": "Probe account"}, created_by=user_id)
            ServiceAccount.update(id=account_id).where(ServiceAccount.id == account.id).execute()
            machine = ApiToken.create_for_service_account(account_id, workspace, body, ROLE_SCOPES["owner"],
                                                          created_by=user_id)
            for token, fixed_id in ((personal, token_id), (machine, account_token_id)):
                ApiToken.update(id=fixed_id).where(ApiToken.id == token.id).execute()
                secrets[fixed_id] = token.secret
    return secrets


MY_CONNECTOR, THEIR_CONNECTOR = "con_01abc123", "con_02def100"


@pytest.fixture
def connectors(app):
    """A custom_api connector in each seed workspace, with short fixed ids (the id is bound into
    the sealed secret, so they are made with it). Returns their secrets by connector id."""
    from models import Connector
    from models.connectors import new_secret

    secrets = {}
    with app.app_context(), db.connection_context():
        for connector_id, workspace in ((MY_CONNECTOR, SEED_WORKSPACE), (THEIR_CONNECTOR, OTHER_WORKSPACE)):
            connector = Connector(id=connector_id, workspace=workspace, type="custom_api",
                                  display_name="Probe connector")
            connector._set_secret(new_secret())
            connector.save(force_insert=True)
            secrets[connector_id] = connector.secret
    return secrets


MY_WEBHOOK, THEIR_WEBHOOK = "whk_01abc123", "whk_02def100"
MY_DELIVERY, THEIR_DELIVERY = "whd_01abc123", "whd_02def100"


@pytest.fixture
def webhooks(app):
    """In each seed workspace, with short fixed ids: a webhook (to a public address, never
    called: no worker runs in-process) and one test delivery of it."""
    from models import WebhookDelivery, WebhookEndpoint
    from models.webhooks import Policy

    with app.app_context(), db.connection_context():
        for workspace, webhook_id, delivery_id in ((SEED_WORKSPACE, MY_WEBHOOK, MY_DELIVERY),
                                                   (OTHER_WORKSPACE, THEIR_WEBHOOK, THEIR_DELIVERY)):
            endpoint = WebhookEndpoint.create_in(workspace, {"url": "https://93.184.215.14/hooks", "events": ["*"]},
                                                 Policy())
            WebhookEndpoint.update(id=webhook_id).where(WebhookEndpoint.id == endpoint.id).execute()
            delivery = WebhookEndpoint.send_test(webhook_id, workspace)
            WebhookDelivery.update(id=delivery_id).where(WebhookDelivery.id == delivery.id).execute()
    return MY_WEBHOOK, THEIR_WEBHOOK
MY_MEMBER, THEIR_MEMBER = "mem_01abc456", "mem_02def789"  # the seed's owners
MY_INVITATION, THEIR_INVITATION = "inv_01abc123", "inv_02def100"


@pytest.fixture
def invitations(app):
    """A pending invitation (as viewer) in each seed workspace, with short fixed ids; returns their
    link tokens by id."""
    from models import Invitation, InvitationLink, utcnow
    from models.members import INVITATION_TTL

    tokens = {}
    with app.app_context(), db.connection_context():
        for invitation_id, workspace in ((MY_INVITATION, SEED_WORKSPACE), (THEIR_INVITATION, OTHER_WORKSPACE)):
            invitation = Invitation.create(id=invitation_id, workspace=workspace, email=f"invitee@{workspace}.test",
                                           role="viewer", expires_at=utcnow() + INVITATION_TTL)
            tokens[invitation_id] = InvitationLink.mint(invitation)
    return tokens
MY_PREDICTION, THEIR_PREDICTION = "prd_01abc123", "prd_02def100"
MY_ALERT_RULE, THEIR_ALERT_RULE = "alr_01abc123", "alr_02def100"
MY_NOTIFICATION, THEIR_NOTIFICATION = "ntf_01abc123", "ntf_02def100"


@pytest.fixture
def prediction_objects(app):
    """In each seed workspace, with short fixed ids: the 7-day prediction of its first pattern, a
    disabled alert rule, and a notification in the feed of the owner that auth() signs in as."""
    from models import AlertRule, Notification, Prediction

    with app.app_context(), db.connection_context():
        for workspace, pattern, ids in (
                (SEED_WORKSPACE, "pat_01xyz789", (MY_PREDICTION, MY_ALERT_RULE, MY_NOTIFICATION)),
                (OTHER_WORKSPACE, "pat_02pqr111", (THEIR_PREDICTION, THEIR_ALERT_RULE, THEIR_NOTIFICATION))):
            prediction_id, rule_id, notification_id = ids
            user_id = f"usr_test_owner_{workspace}"
            User.get_or_create(id=user_id, defaults={"email": "owner@example.test"})
            Membership.get_or_create(user=user_id, workspace=workspace,
                                     defaults={"id": f"mem_{user_id}", "role": "owner"})
            Prediction.update(id=prediction_id).where(
                (Prediction.pattern == pattern) & (Prediction.window_days == 7)).execute()
            rule = AlertRule.create_in(workspace, {"name": "Probe rule", "scope": "global", "enabled": False,
                                                   "threshold": {"probability": 0.7, "window_days": 7},
                                                   "channels": [{"type": "in_app"}]})
            AlertRule.update(id=rule_id).where(AlertRule.id == rule.id).execute()
            Notification.create(id=notification_id, workspace=workspace, user=user_id, type="prediction.alert",
                                title="Probe", target={"type": "pattern", "id": pattern})


class Inbox:
    """What the SMTP server took: (recipients, the parsed message) for each email."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.rcpt_tos, message))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on loopback; yields (its inbox, the SMTP_URL to reach it)."""
    from aiosmtpd.controller import Controller

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()
