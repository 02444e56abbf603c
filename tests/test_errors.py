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
