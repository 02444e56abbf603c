"""Liveness and readiness, outside /v1 and without auth."""
import flask
import marshmallow as ma
from swagger_ui_bundle import swagger_ui_path

from app.api import Blueprint
from app.errors import ApiError
from models import db

blp = Blueprint("meta", __name__, description="Service health.")


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)


@blp.route("/health")
@blp.response(200, HealthSchema)
def health():
    """Liveness: the process answers (no database call)."""
    return {"status": "ok"}


@blp.route("/ready")
@blp.response(200, HealthSchema)
@blp.errors(503)
def ready():
    """Readiness: the database answers."""
    try:
        with db.connection_context():
            db.execute_sql("SELECT 1")
    except Exception as error:  # any driver failure means "not ready"
        raise ApiError(503, "The database is unreachable", details={"reason": type(error).__name__}) from None
    return {"status": "ready"}


# The explorer's JavaScript and CSS, served by this service: /docs works with no internet.
docs_assets = flask.Blueprint("docs_assets", __name__, static_folder=swagger_ui_path,
                              static_url_path="/docs/assets")
