"""The thin project layer over flask-smorest: Api, Blueprint, request parsing and shared fields."""
import datetime
import http
import re

import flask_smorest
import marshmallow as ma
from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from flask_smorest.utils import prepare_response
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.routing import BaseConverter

from .auth import EXPIRATION_HEADER, require_scope
from .errors import ErrorSchema, handle_http_exception
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from .idempotency import idempotent
from .inputs import UNSTORABLE, UNSTORABLE_MESSAGE, parse_json_body, unstorable_fields
from .ratelimit import is_limited


class Parser(FlaskParser):
    """webargs parser: 400 on bad input, unknown fields refused everywhere, JSON bodies only,
    and no text that the database could not store (so no input reaches it as a 500)."""

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
    }

    def _raw_load_json(self, req):
        raw = req.get_data(cache=True)
        if not raw:
            return core.missing
        if not is_json_request(req):
            flask_smorest.abort(400, message="Request body must be JSON (Content-Type: application/json)",
                                messages={"json": ["Content-Type must be application/json."]})
        body = parse_json_body(raw)
        self._refuse_unstorable(unstorable_fields(body), "json")
        return body

    def load_querystring(self, req, schema):
        self._refuse_unstorable({key: [UNSTORABLE_MESSAGE] for key, value in req.args.items(multi=True)
                                 if UNSTORABLE.search(key + value)}, "query")
        return super().load_querystring(req, schema)

    def _refuse_unstorable(self, problems, location):
        if problems:
            flask_smorest.abort(400, messages={location: problems})


def _header(description, type_="string", required=True):
    return {"description": description, "required": required, "schema": {"type": type_}}


REQUEST_ID_HEADER = {"X-Request-Id": _header("Echoes a safe client X-Request-Id, else a new id; "
                                             "equals `error.trace_id`.")}
EXPIRATION_HEADERS = {EXPIRATION_HEADER: _header("When the API token this request was made with expires "
                                                 "(RFC 3339); sent only to API tokens.", required=False)}
BUDGET_HEADERS = {"X-RateLimit-Limit": _header("Requests allowed per window.", "integer"),
                  "X-RateLimit-Remaining": _header("Requests left in this window.", "integer")}
# Headers of the shared error responses, beyond X-Request-Id.
ERROR_HEADERS = {
    401: {"WWW-Authenticate": _header("The Bearer challenge.")},
    429: {"Retry-After": _header("Seconds until the budget refills.", "integer"), **BUDGET_HEADERS},
    503: {"Retry-After": _header("Seconds to wait before retrying.", "integer")},
}


class CommonResponses(BasePlugin):
    """What any operation can meet whatever its view does, documented once, here: a 413 where
    it reads a body, a 429 and the budget headers where the rate limit applies, and
    X-Request-Id on every response, and the API token's expiry where a token is required."""

    def operation_helper(self, path=None, operations=None, **kwargs):
        limited = is_limited(path)
        for operation in (operations or {}).values():
            expiring = EXPIRATION_HEADERS if operation.get("security") else {}
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault(413, "REQUEST_ENTITY_TOO_LARGE")
            if limited:
                responses.setdefault(429, "TOO_MANY_REQUESTS")
            for status, response in responses.items():
                # Inline responses are the successes (the shared errors carry their own headers);
                # a 101 is the WebSocket handshake, answered before the app's headers exist.
                if isinstance(response, dict) and int(status) >= 200:
                    response["headers"] = {**REQUEST_ID_HEADER, **(BUDGET_HEADERS if limited else {}),
                                           **expiring, **response.get("headers", {})}


class Converter(OpenAPIConverter):
    """marshmallow -> OpenAPI 3.1 (JSON Schema 2020-12), and a dict's key rules as its
    `propertyNames`."""

    def init_attribute_functions(self, *args, **kwargs):
        super().init_attribute_functions(*args, **kwargs)
        self.add_attribute_function(Converter.dict2property_names)

    def dict2property_names(self, field, **kwargs):
        if isinstance(field, ma.fields.Dict) and field.key_field is not None:
            return {"propertyNames": self.field2property(field.key_field)}
        return {}


class ConverterPlugin(MarshmallowPlugin):
    Converter = Converter


class SchemaRules(BasePlugin):
    """A schema's rules across fields (`exactly one of`, a value that depends on another field),
    written as JSON Schema in its `OPENAPI_RULES`, join its component: the document then
    refuses what the server refuses."""

    def schema_helper(self, name, definition, **kwargs):
        schema = kwargs.get("schema")
        return dict(getattr(schema, "OPENAPI_RULES", None) or {})


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema
    # No catch-all `default` response: every status an operation can give is declared, so an
    # undocumented one is a defect that contract tests (tests/test_schemathesis.py) can see.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_converter(IdConverter, IdConverter.openapi_schema)

    def init_app(self, app, *, spec_kwargs=None):
        app.url_map.converters["id"] = IdConverter
        spec_kwargs = dict(spec_kwargs or {})
        spec_kwargs.setdefault("marshmallow_plugin", ConverterPlugin())
        spec_kwargs["extra_plugins"] = [CommonResponses(), SchemaRules(), *spec_kwargs.get("extra_plugins", ())]
        super().init_app(app, spec_kwargs=spec_kwargs)

    def _register_responses(self):
        """One shared response per status, in the error envelope, with its headers."""
        for status in http.HTTPStatus:
            response = {"description": status.phrase,
                        "headers": {**REQUEST_ID_HEADER, **ERROR_HEADERS.get(status, {})}}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)

    def handle_http_exception(self, error):
        return handle_http_exception(error)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()

    def __init__(self, *args, protector=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._protector = protector

    def arguments(self, schema, *args, **kwargs):
        # An instance, built once: given the class, webargs builds (and deep-copies) one per request.
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)

    def auth_required(self, scope=None, members_only=False):
        """Require a bearer token (with `scope`, if given; a signed-in member's session, not an
        API token, if `members_only`); documents the security and 401/403/503."""

        def decorator(func):
            guarded = require_scope(self._protector, scope, members_only)(func)
            guarded = self.doc(security=[{"bearerAuth": [scope] if scope else []}])(guarded)
            # 503: the token's session is looked up in the database on every call.
            return self.errors(*((401, 403, 503) if scope or members_only else (401, 503)))(guarded)

        return decorator

    def idempotent(self, func):
        """Accept an Idempotency-Key on a creating POST (documented, with its 409)."""
        func = self.doc(parameters=[{
            "in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                       "pattern": IDEMPOTENCY_KEY_PATTERN},
            "description": "Retry safely: the same key and body within 24 h replays the first "
                           "response (header Idempotent-Replayed: true); another body is a 409."}])(func)
        return self.errors(409)(idempotent(func))

    def links(self, status, path, methods, **parameters):
        """OpenAPI links from a response to the operations of `path` (e.g. a created resource's
        reads and writes), with their parameters as runtime expressions (`$response.body#/id`):
        clients, and schemathesis' stateful tests, follow them."""
        pointer = path.replace("~", "~0").replace("/", "~1")
        links = {re.sub(r"[^A-Za-z0-9]+", "_", f"{method} {path}").strip("_"): {
            "operationRef": f"#/paths/{pointer}/{method}", "parameters": parameters} for method in methods}
        return self.doc(responses={status: {"links": links}})

    def errors(self, *statuses):
        """Document the error responses a view can give, all in the envelope."""

        def decorator(func):
            for status in statuses:
                func = self.alt_response(status, response=_RESPONSE_NAMES[status])(func)
            return func

        return decorator


_RESPONSE_NAMES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    409: "CONFLICT", 413: "REQUEST_ENTITY_TOO_LARGE", 422: "UNPROCESSABLE_ENTITY",
    429: "TOO_MANY_REQUESTS", 503: "SERVICE_UNAVAILABLE",
}


class IdConverter(BaseConverter):
    """`<id("iss"):issue_id>`: the type prefix, `_`, then 1 to 36 letters or digits (a ULID,
    or a seed's short id). Anything else is no route (404) and never reaches the database:
    ids of another type, 10 kB strings, NUL bytes, `../` and quotes."""

    def __init__(self, url_map, prefix):
        super().__init__(url_map)
        self.prefix = prefix
        self.regex = f"{re.escape(prefix)}_[0-9A-Za-z]{{1,36}}"

    @staticmethod
    def openapi_schema(converter):
        return {"type": "string", "pattern": f"^{converter.regex}$", "maxLength": len(converter.prefix) + 37}


class Timestamp(ma.fields.DateTime):
    """ISO-8601 UTC with a Z, to the second; input in any ISO-8601 form, stored as naive UTC."""

    def __init__(self, **kwargs):
        super().__init__(format="iso", **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value.replace(microsecond=0).isoformat() + "Z"

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is not None:
            try:
                parsed = parsed.astimezone(datetime.UTC).replace(tzinfo=None)
            except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
                raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None
        return parsed


class StrictInteger(ma.fields.Integer):
    """A JSON integer, as JSON Schema counts them: `40` or `40.0`, not `40.5`, `"40"` or true
    (which Python counts as an integer)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


# Every character either regex engine calls a space: the document's patterns are read by
# ECMAScript's rules (JSON Schema) and the server's by Python's, and their `\s` differ (Python's
# includes U+001C-U+001F and U+0085, ECMAScript's U+FEFF). Patterns name this class instead.
SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


class HttpUrl(ma.fields.String):
    """An absolute http(s) URL of at most 2,048 characters, checked by the one expression the
    document shows: a host name or IP literal, an optional port, then no space or control
    character (nor a C1 control)."""

    _LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    PATTERN = (rf"^https?://(?:(?:{_LABEL}\.)*{_LABEL}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
               rf"(?:[/?#][^{SPACE}\x00-\x1f\x7f-\x9f]*)?$")

    def __init__(self, **kwargs):
        super().__init__(validate=[ma.validate.Length(max=2048), ma.validate.Regexp(
            self.PATTERN, error="Must be an http or https URL.")], **kwargs)


class CommaList(ma.fields.Field):
    """`a,b,c` in a query string -> a list of distinct choices (OR), at most MAX_ITEMS of them
    (each is a bound parameter; PostgreSQL takes 65,535 per query). Space around a value and
    empty values (`a,,b`, a trailing comma) are ignored; at least one value is needed. The
    document's `pattern` is the very expression the server parses with."""

    MAX_ITEMS = 100
    # A value: no comma, no NUL (no database stores it), no space at either end.
    ANY_ITEM = rf"[^,{SPACE}\x00](?:[^,\x00]*[^,{SPACE}\x00])?"

    def __init__(self, choices=None, **kwargs):
        self.choices = tuple(choices) if choices else None
        item = "(?:" + "|".join(map(re.escape, self.choices)) + ")" if self.choices else self.ANY_ITEM
        self.pattern = rf"^[{SPACE},]*{item}(?:[{SPACE}]*,[{SPACE},]*{item}){{0,{self.MAX_ITEMS - 1}}}[{SPACE},]*$"
        metadata = kwargs.pop("metadata", {})
        if self.choices:
            metadata.setdefault("description", "Comma-separated, any of: " + ", ".join(self.choices))
        metadata["description"] = f"{metadata.get('description', 'Comma-separated.')} At most {self.MAX_ITEMS}."
        metadata["pattern"] = self.pattern
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ma.ValidationError("Not a valid string.")
        if re.fullmatch(self.pattern, value):
            return list(dict.fromkeys(re.findall(self.ANY_ITEM, value)))
        items = [part.strip() for part in value.split(",") if part.strip()]
        if not items:
            raise ma.ValidationError("Must name at least one value.")
        if len(items) > self.MAX_ITEMS:
            raise ma.ValidationError(f"Must name at most {self.MAX_ITEMS} values.")
        if self.choices:
            bad = [item for item in items if item not in self.choices]
            if bad:
                raise ma.ValidationError(
                    f"Unknown value(s) {', '.join(bad)}; must be among: {', '.join(self.choices)}.")
        raise ma.ValidationError("Must be comma-separated values without NUL characters.")
