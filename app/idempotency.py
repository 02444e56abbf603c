"""`Idempotency-Key` on creating POSTs (spec §5): the same key and body within 24 h replays the
first response and creates nothing; the same key with another body is a 409."""
import functools
import hashlib
import json
import re

import peewee as pw
from flask import current_app, make_response, request

from models import events
from models.idempotency import IdempotencyKey

from .auth import current_principal
from .errors import ApiError

HEADER = "Idempotency-Key"
# Printable ASCII: what an HTTP header carries safely, and what any database stores.
KEY_PATTERN = "^[\x20-\x7e]{1,255}$"


def _request_digest():
    """Method, path and body; a JSON body is compared by meaning, not by its whitespace."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        body = raw
    return hashlib.sha256(b"\n".join([request.method.encode(), request.path.encode(), body])).hexdigest()


def _replay(row, digest):
    if row.request_hash != digest:
        raise ApiError(409, "This Idempotency-Key was already used with a different request",
                       details={"idempotency_key": row.key})
    response = current_app.response_class(row.body, status=row.status, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    if row.location:
        response.headers["Location"] = row.location
    return response


class _NotKept(Exception):
    """The view answered with an error: roll back, keep nothing, let a retry run again."""

    def __init__(self, response):
        self.response = response


def idempotent(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not re.fullmatch(KEY_PATTERN, key):
            raise ApiError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters",
                           details={HEADER: ["Must be 1 to 255 printable ASCII characters."]})
        workspace_id, digest = current_principal().workspace_id, _request_digest()
        existing = IdempotencyKey.find(workspace_id, key)
        if existing is not None:
            return _replay(existing, digest)
        try:
            # The create and the key commit together: a concurrent duplicate waits on the key's
            # unique index, fails, rolls its own create back and replays ours.
            with events.transaction():
                response = make_response(view(*args, **kwargs))
                if not 200 <= response.status_code < 300:
                    raise _NotKept(response)
                IdempotencyKey.create(workspace=workspace_id, key=key, request_hash=digest,
                                      status=response.status_code, body=response.get_data(as_text=True),
                                      location=response.headers.get("Location"))
        except _NotKept as not_kept:
            return not_kept.response
        except pw.IntegrityError:
            return _replay(IdempotencyKey.find(workspace_id, key), digest)
        return response

    return wrapper
