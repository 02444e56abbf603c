"""The application factory: a table of contents for the service."""
import logging

from flask import Flask

from . import auth as authentication
from . import clerk, cli, config, events, ratelimit, requests, tasks
from .api import CommaList
from .errors import register_error_handlers
from .extensions import api, cors, limiter

API_SETTINGS = {
    "API_TITLE": "Causeloop API",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.1.0",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    "OPENAPI_SWAGGER_UI_URL": "/docs/assets/",
    "OPENAPI_SWAGGER_UI_CONFIG": {"persistAuthorization": True, "displayRequestDuration": True},
    "API_SPEC_OPTIONS": {
        "info": {"description": "Track failures and the recurring causes behind them."},
        "components": {"securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    },
}


def create_app(overrides=None):
    from blueprints import (alerts, audit, auth, connectors, grouping_rules, inbound, ingest, issues, members, meta,
                            notifications, patterns, predictions, retention, stream, tokens, webhooks)
    from models import Issue, Pattern, Prediction, db, make_database

    app = Flask(__name__)
    app.json.sort_keys = False
    app.config.update(config.from_env())
    app.config.update(API_SETTINGS)
    app.config.update(overrides or {})
    config.check_secret(app.config)
    logging.basicConfig(level=app.config["LOG_LEVEL"],
                        format="%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s")

    db.initialize(make_database(app.config["DATABASE_URL"], pool_size=app.config["DB_POOL_SIZE"]))
    requests.init_app(app)
    authentication.init_app(app)
    register_error_handlers(app)
    ratelimit.configure(app)
    limiter.init_app(app)
    cors.init_app(app, resources={r"/v1/*": {"origins": app.config["CORS_ORIGINS"]}},
                  allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
                  expose_headers=["X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                                  "Retry-After", "Location", "Idempotent-Replayed",
                                  authentication.EXPIRATION_HEADER],
                  max_age=600)
    api.init_app(app)
    api.register_field(CommaList, "string", None)
    for module in (meta, auth, issues, patterns, grouping_rules, ingest, tokens, connectors, inbound, webhooks,
                   members, audit, retention, predictions, alerts, notifications):
        api.register_blueprint(module.blp)
    app.register_blueprint(meta.docs_assets)
    app.register_blueprint(stream.blp)
    stream.document(api.spec, app)
    clerk.init_app(app)
    cli.init_app(app)
    events.init_app(app, serializers={Issue: issues.IssueSchema().dump,
                                      Pattern: patterns.PatternSchema().dump,
                                      Prediction: predictions.PredictionSchema().dump})
    tasks.init_app(app)

    if app.config["USE_MOCK"]:
        cli.prepare_mock_database()
    return app
