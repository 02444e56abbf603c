"""One error envelope from every layer, with the request id as its trace id."""
import pytest


def assert_envelope(response, status, code):
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["trace_id"] == response.headers["X-Request-Id"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "File \"" not in text
    return error


def test_validation_error_names_the_field(client, auth):
    error = assert_envelope(client.get("/v1/issues?limit=101", headers=auth()), 400, "validation_error")
    assert error["details"] == {"limit": ["Must be between 1 and 100."]}


def test_unauthorized(client):
    response = client.get("/v1/issues")
    assert_envelope(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_forbidden_names_the_missing_scope(client, auth):
    error = assert_envelope(client.post("/v1/issues", headers=auth("viewer"), json={"title": "x"}),
                            403, "forbidden")
    assert error["details"] == {"required_scope": "issues:write"}


def test_unknown_route_is_not_found(client):
    assert_envelope(client.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_method_not_allowed(client):
    response = client.delete("/v1/issues")
    assert_envelope(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_oversized_body_is_payload_too_large(client, auth):
    body = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/v1/issues", headers={**auth(), "Content-Type": "application/json"}, data=body)
    assert_envelope(response, 413, "payload_too_large")


def test_unexpected_exception_is_internal_error_without_details(make_app):
    app = make_app()

    @app.route("/boom")
    def boom():
        raise RuntimeError("SELECT secret FROM internals")

    response = app.test_client().get("/boom")
    error = assert_envelope(response, 500, "internal_error")
    assert "SELECT" not in response.get_data(as_text=True)
    assert "details" not in error


@pytest.mark.parametrize("sent", ["abc-123_XYZ.9:1", "x" * 128])
def test_client_request_id_is_echoed(client, sent):
    response = client.get("/v1/nothing-here", headers={"X-Request-Id": sent})
    assert response.headers["X-Request-Id"] == sent
    assert response.get_json()["error"]["trace_id"] == sent


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "<script>"])
def test_unsafe_request_id_is_replaced(client, sent):
    response = client.get("/health", headers={"X-Request-Id": sent})
    assert response.headers["X-Request-Id"] != sent
    assert response.headers["X-Request-Id"].startswith("req_")


def test_success_responses_carry_a_request_id(client):
    assert client.get("/health").headers["X-Request-Id"].startswith("req_")


@pytest.mark.parametrize("body,content_type", [
    (b"{not json", "application/json"),
    (b'["a list"]', "application/json"),
    (b'"a string"', "application/json"),
    (b"title=x", "application/x-www-form-urlencoded"),
])
def test_body_that_is_not_a_json_object_is_a_validation_error(client, auth, body, content_type):
    response = client.post("/v1/issues", headers={**auth(), "Content-Type": content_type}, data=body)
    assert_envelope(response, 400, "validation_error")


def test_unknown_body_field_is_refused_by_name(client, auth):
    response = client.post("/v1/issues", headers=auth(), json={"title": "x", "priority": 1})
    error = assert_envelope(response, 400, "validation_error")
    assert "priority" in error["details"]


def test_unknown_query_parameter_is_refused_by_name(client, auth):
    error = assert_envelope(client.get("/v1/issues?statuss=open", headers=auth()), 400, "validation_error")
    assert "statuss" in error["details"]


def test_nested_field_errors_use_dotted_names(client, auth):
    response = client.post("/v1/patterns", headers=auth(), json={"name": "p", "fingerprint": {"domain": ""}})
    error = assert_envelope(response, 400, "validation_error")
    assert set(error["details"]) == {"fingerprint.domain", "fingerprint.root_cause"}


@pytest.mark.parametrize("body,reason", [
    (b'{"title": "x", "metadata": {"a": NaN}}', "NaN"),
    (b'{"title": "x", "metadata": {"a": -Infinity}}', "Infinity"),
    (b'{"title": "x", "metadata": {"a": 1e999}}', "out of range"),
    (b'{"title": "x", "metadata": {"a": ' + b"9" * 1001 + b"}}", "digits"),
    (b'{"title": "x", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b'{"title": "x", "metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "nested"),
])
def test_body_that_is_not_strict_json_is_a_validation_error(client, auth, body, reason):
    """RFC 8259 only: what Python's json would let through must not reach the database."""
    response = client.post("/v1/issues", headers={**auth(), "Content-Type": "application/json"}, data=body)
    error = assert_envelope(response, 400, "validation_error")
    assert reason.lower() in error["message"].lower()


@pytest.mark.parametrize("payload,field", [
    ({"title": "a\x00b"}, "title"),
    ({"title": "x", "metadata": {"k": "v\x00"}}, "metadata.k"),
    ({"title": "x", "metadata": {"k\x00": "v"}}, "metadata"),
])
def test_nul_characters_in_a_body_are_refused_by_name(client, auth, payload, field):
    error = assert_envelope(client.post("/v1/issues", headers=auth(), json=payload), 400, "validation_error")
    assert field in error["details"]


def test_an_unpaired_surrogate_in_a_body_is_refused(client, auth):
    response = client.post("/v1/issues", headers={**auth(), "Content-Type": "application/json"},
                           data=b'{"title": "\\ud800"}')
    assert "title" in assert_envelope(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("param", ["q", "source", "pattern_id", "sort", "cursor"])
def test_nul_characters_in_a_query_parameter_are_refused_by_name(client, auth, param):
    response = client.get("/v1/issues", headers=auth(), query_string={param: "a\x00b"})
    assert param in assert_envelope(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("param,value", [("created_after", "0001-01-01T00:00:00+01:00"),
                                         ("created_before", "9999-12-31T23:59:59-01:00")])
def test_a_timestamp_outside_the_calendar_in_utc_is_a_validation_error(client, auth, param, value):
    response = client.get("/v1/issues", headers=auth(), query_string={param: value})
    assert param in assert_envelope(response, 400, "validation_error")["details"]


def test_a_fractional_integer_is_refused_not_truncated(client, auth):
    response = client.post("/v1/patterns", headers=auth(), json={"name": "p", "risk_score": 5.5})
    assert "risk_score" in assert_envelope(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("path", ["/v1/issues/pat_01xyz789", "/v1/issues/iss_" + "x" * 37,
                                  "/v1/issues/iss_%00", "/v1/issues/iss_a-b", "/v1/patterns/iss_01abc123"])
def test_a_malformed_id_is_no_route(client, auth, path):
    error = assert_envelope(client.get(path, headers=auth()), 404, "not_found")
    assert error["message"].startswith("No route")


def test_the_bulk_path_is_not_an_issue_id(client, auth):
    response = client.get("/v1/issues/bulk", headers=auth())
    assert_envelope(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_a_long_path_is_not_echoed_in_full(client):
    error = assert_envelope(client.get("/v1/" + "x" * 5000), 404, "not_found")
    assert len(error["message"]) < 300


def test_a_database_outage_says_when_to_retry(client, auth, monkeypatch):
    import peewee

    from models import Issue

    def unreachable(*args, **kwargs):
        raise peewee.OperationalError("connection refused")

    monkeypatch.setattr(Issue, "search", unreachable)
    response = client.get("/v1/issues", headers=auth())
    assert_envelope(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "5"
