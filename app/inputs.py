"""What request input may reach the database: strict JSON, and only text it can store."""
import json
import math
import re

import flask_smorest

MAX_JSON_DEPTH = 32
MAX_NUMBER_DIGITS = 1000
# Neither database stores these: PostgreSQL refuses NUL in text and jsonb, and an unpaired
# surrogate cannot be encoded as UTF-8.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Must be text without NUL characters or unpaired surrogates."


def _not_json(constant):
    raise ValueError(f"{constant} is not JSON")


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _integer(text):
    if len(text) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def parse_json_body(raw):
    """RFC 8259 JSON only: no NaN or Infinity, numbers a database can hold. 400 otherwise."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_not_json, parse_float=_finite,
                          parse_int=_integer)
    except json.JSONDecodeError:
        reason = "Invalid JSON body."
    except UnicodeDecodeError:
        reason = "Invalid JSON body: not UTF-8."
    except RecursionError:
        reason = f"Invalid JSON body: nested deeper than {MAX_JSON_DEPTH} levels."
    except ValueError as error:  # NaN, Infinity, 1e999, an integer of a thousand digits
        reason = f"Invalid JSON body: {error}."
    flask_smorest.abort(400, message=reason, messages={"json": [reason]})


def unstorable_fields(data):
    """{field: [message]} for text no database can store (keys included) or nesting deeper
    than MAX_JSON_DEPTH, anywhere in parsed input. Iterative: depth is what is being checked."""
    problems, pending = {}, [("", data, 0)]
    while pending:
        path, value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:  # named by its top-level field, not a 32-part path
            problems[path.split(".")[0]] = [f"Nested deeper than {MAX_JSON_DEPTH} levels."]
            continue
        items = value.items() if isinstance(value, dict) else (
            enumerate(value) if isinstance(value, list) else ())
        for key, item in items:
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and UNSTORABLE.search(key):
                problems[path or "body"] = [UNSTORABLE_MESSAGE]
            elif isinstance(item, str):
                if UNSTORABLE.search(item):
                    problems[inner] = [UNSTORABLE_MESSAGE]
            else:
                pending.append((inner, item, depth + 1))
    return problems
