"""The stack's ceiling for bench/lists.py: a bare Flask app, under the same gunicorn settings,
answering every request with a pre-serialised body (our first page's bytes, from BARE_BODY)."""
import os

from flask import Flask, Response

with open(os.environ["BARE_BODY"], "rb") as handle:
    BODY = handle.read()

app = Flask(__name__)


@app.route("/", defaults={"path": ""})
@app.route("/<path:path>")
def answer(path):
    return Response(BODY, mimetype="application/json")
