"""The stack's ceiling: Flask under the same gunicorn settings, answering a pre-serialised JSON
body of a given size (BARE_BODY_BYTES) with no database, auth or serialisation."""
import os

from flask import Flask, Response

SIZE = int(os.environ.get("BARE_BODY_BYTES", "10000"))
BODY = b'{"data": "' + b"x" * max(0, SIZE - 12) + b'"}'

app = Flask(__name__)


@app.get("/")
def page():
    return Response(BODY, mimetype="application/json")
