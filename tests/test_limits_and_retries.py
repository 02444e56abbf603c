"""Rate limits (spec §7), idempotent retries (§5) and CORS."""
import concurrent.futures
import os
import shutil
import socket
import subprocess
import time

import pytest
import requests

from conftest import ON_POSTGRES, OTHER_WORKSPACE, TEST_DATABASE_URL
from test_server import free_port, mock_server, run_procfile_web, stop


@pytest.fixture
def limited(make_app):
    def build(limit="5/minute", **overrides):
        app = make_app(RATE_LIMIT=limit, **overrides)
        return app.test_client()
    return build


def test_budget_and_headers_then_429(limited, auth):
    client = limited()
    headers = auth()
    remaining = []
    for _ in range(5):
        response = client.get("/v1/issues?limit=1", headers=headers)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert "Retry-After" not in response.headers
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    refused = client.get("/v1/issues?limit=1", headers=headers)
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    error = refused.get_json()["error"]
    assert (error["code"], error["message"]) == ("rate_limited", "Too many requests")
    assert error["trace_id"] == refused.headers["X-Request-Id"]


def test_one_budget_across_all_routes_and_errors(limited, auth):
    client = limited("4/minute")
    headers = auth()
    statuses = [client.get("/v1/issues", headers=headers).status_code,
                client.get("/v1/patterns", headers=headers).status_code,
                client.get("/v1/no-such-route").status_code,
                client.get("/v1/issues").status_code,
                client.get("/v1/patterns/pat_01xyz789", headers=headers).status_code]
    assert statuses == [200, 200, 404, 401, 429]


def test_health_docs_and_openapi_are_not_limited(limited):
    client = limited("1/minute")
    for _ in range(3):
        for path in ("/health", "/ready", "/openapi.json", "/docs"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "X-RateLimit-Limit" not in response.headers


def test_forged_forwarded_for_gets_no_fresh_budget_without_trust_proxy(limited):
    client = limited("2/minute")
    for n in range(2):
        client.get("/v1/issues", headers={"X-Forwarded-For": f"10.0.0.{n}"})
    assert client.get("/v1/issues", headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 429


def test_behind_a_trusted_proxy_the_first_forwarded_address_is_the_client(limited):
    client = limited("2/minute", TRUST_PROXY=True)
    for _ in range(2):
        client.get("/v1/issues", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    assert client.get("/v1/issues", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.2"}).status_code == 429
    assert client.get("/v1/issues", headers={"X-Forwarded-For": "198.51.100.1, 10.0.0.1"}).status_code == 401


def redis_server():
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    return path


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    proc = subprocess.Popen([redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.live
def test_two_servers_share_one_limit_through_redis(redis_url, tmp_path):
    # Two web processes, as two dynos (or two gunicorn workers) would be, each taking half of the
    # budget: which process the kernel hands a connection to is not ours to choose, so each
    # process gets its own port here and the split is exact.
    env = {**os.environ, "USE_MOCK": "1", "WEB_CONCURRENCY": "1", "RATE_LIMIT": "50/minute",
           "REDIS_URL": redis_url,
           "DATABASE_URL": TEST_DATABASE_URL if ON_POSTGRES else f"sqlite:///{tmp_path / 'redis.db'}"}
    servers = []
    try:
        for _ in range(2):  # one after the other: the first has seeded the database when the second starts
            servers.append(run_procfile_web({**env, "PORT": str(free_port())}))
        statuses = [requests.get(base + "/v1/issues", timeout=5).status_code
                    for _, base in servers for _ in range(25)]
        assert statuses == [401] * 50
        for _, base in servers:
            refused = requests.get(base + "/v1/issues", headers={"X-Forwarded-For": "10.1.2.3"}, timeout=5)
            assert refused.status_code == 429
            assert refused.headers["X-RateLimit-Limit"] == "50"
            assert refused.headers["X-RateLimit-Remaining"] == "0"
            assert int(refused.headers["Retry-After"]) > 0
            assert refused.json()["error"]["code"] == "rate_limited"
    finally:
        for proc, _ in servers:
            stop(proc)


def test_same_key_and_body_replays_without_creating(client, auth):
    headers = {**auth(), "Idempotency-Key": "create-once-1"}
    first = client.post("/v1/issues", headers=headers, json={"title": "Retried"})
    second = client.post("/v1/issues", headers=headers, json={"title": "Retried"})
    assert first.status_code == second.status_code == 201
    assert second.get_json() == first.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert client.get("/v1/issues?limit=1", headers=auth()).get_json()["page"]["total"] == 88


def test_same_key_with_another_body_is_a_conflict(client, auth):
    headers = {**auth(), "Idempotency-Key": "create-once-2"}
    client.post("/v1/issues", headers=headers, json={"title": "One"})
    response = client.post("/v1/issues", headers=headers, json={"title": "Two"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    assert client.get("/v1/issues?limit=1", headers=auth()).get_json()["page"]["total"] == 88


def test_keys_are_per_workspace(client, auth):
    key = {"Idempotency-Key": "shared-key"}
    mine = client.post("/v1/issues", headers={**auth(), **key}, json={"title": "A"})
    theirs = client.post("/v1/issues", headers={**auth(workspace=OTHER_WORKSPACE), **key}, json={"title": "A"})
    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers


def test_a_failed_request_does_not_burn_its_key(client, auth):
    headers = {**auth(), "Idempotency-Key": "fix-and-retry"}
    assert client.post("/v1/issues", headers=headers, json={"title": ""}).status_code == 400
    assert client.post("/v1/issues", headers=headers, json={"title": ""}).status_code == 400
    assert client.post("/v1/patterns", headers=headers, json={"name": "p"}).status_code == 201


def test_idempotent_pattern_create(client, auth):
    headers = {**auth(), "Idempotency-Key": "pattern-1"}
    first = client.post("/v1/patterns", headers=headers, json={"name": "Once"}).get_json()
    again = client.post("/v1/patterns", headers=headers, json={"name": "Once"})
    assert again.get_json() == first and again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_key_length_is_validated(client, auth, key):
    response = client.post("/v1/issues", headers={**auth(), "Idempotency-Key": key}, json={"title": "x"})
    assert response.status_code == 400


@pytest.mark.live
def test_twenty_concurrent_identical_posts_create_one_issue(tmp_path):
    with mock_server(tmp_path) as (base, headers, _):
        headers = {**headers, "Idempotency-Key": f"burst-{time.time()}"}
        title = f"burst {time.time()}"

        def post(_):
            response = requests.post(base + "/v1/issues", headers=headers, json={"title": title}, timeout=30)
            return response.status_code, response.text

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(post, range(20)))
        assert {status for status, _ in results} == {201}
        assert len({body for _, body in results}) == 1
        found = requests.get(base + "/v1/issues", headers=headers,
                             params={"q": f'"{title}"', "limit": 100}, timeout=5).json()
        assert [item["title"] for item in found["data"]].count(title) == 1


def test_cors_allows_configured_origins_only(client):
    allowed = client.options("/v1/issues", headers={"Origin": "http://localhost:3000",
                                                    "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "Authorization, Idempotency-Key"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "idempotency-key" in allowed.headers["Access-Control-Allow-Headers"].lower()
    denied = client.options("/v1/issues", headers={"Origin": "https://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in denied.headers
    exposed = client.get("/v1/issues", headers={"Origin": "http://localhost:3000"})
    assert "x-request-id" in exposed.headers["Access-Control-Expose-Headers"].lower()


@pytest.mark.parametrize("key", ["tab\tkey", "caf\u00e9"])
def test_key_must_be_printable_ascii(client, auth, key):
    response = client.post("/v1/issues", headers={**auth(), "Idempotency-Key": key}, json={"title": "x"})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["error"]["details"]
