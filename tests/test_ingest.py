"""Ingestion (POST /v1/ingest/events and /batch), detection into patterns, and similar issues."""
import collections
import concurrent.futures
import datetime
import os

import pytest
import requests

from conftest import ON_POSTGRES, OTHER_WORKSPACE, TEST_DATABASE_URL
from models import Issue, Pattern, db
from models.base import utcnow
from models.patterns import RECENT_SATURATION, risk_score
from test_server import free_port, mock_server

from models.grouping.similarity import DEFAULT_THRESHOLD

POOL = "FATAL: remaining connection slots are reserved for non-replication superuser connections"
POOL_2 = "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached"
DISK = "OSError: [Errno 28] No space left on device while writing /var/log/app.log"


def batch(client, headers, records):
    return client.post("/v1/ingest/batch", headers=headers, json={"records": records})


def total(client, headers):
    return client.get("/v1/issues?limit=1", headers=headers).get_json()["page"]["total"]


def test_batch_of_500_stores_valid_records_and_lists_invalid_ones(client, auth):
    records = [{"source": "sentry", "external_id": f"E-{n}", "title": f"Failure number {n}"} for n in range(500)]
    bad = {7: {"title": ""}, 100: "not an object", 250: {"title": "x", "severity": "p9"},
           300: {"title": "x", "surprise": True}, 499: {"source": "s"}}
    for index, record in bad.items():
        records[index] = record
    response = batch(client, auth(), records)
    assert response.status_code == 202
    body = response.get_json()
    assert body["accepted"] == 495 and len(body["issue_ids"]) == 495 == len(set(body["issue_ids"]))
    assert [r["index"] for r in body["rejected"]] == sorted(bad)
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert "title" in reasons[7] and "object" in reasons[100] and "severity" in reasons[250]
    assert "surprise" in reasons[300] and "title" in reasons[499]
    assert total(client, auth()) == 87 + 495


@pytest.mark.parametrize("count", [0, 501])
def test_batch_size_outside_1_to_500_is_refused(client, auth, count):
    response = batch(client, auth(), [{"title": "t"}] * count)
    assert response.status_code == 400
    assert "records" in response.get_json()["error"]["details"]
    assert total(client, auth()) == 87


def test_replaying_a_batch_creates_nothing_new(client, auth):
    records = [{"source": "datadog", "external_id": f"M-{n}", "title": f"Monitor {n} alert"} for n in range(20)]
    first = batch(client, auth(), records).get_json()
    again = batch(client, auth(), records).get_json()
    assert again["issue_ids"] == first["issue_ids"]
    assert total(client, auth()) == 87 + 20


def test_a_repeat_updates_the_issue_it_created(client, auth):
    first = batch(client, auth(), [{"source": "pagerduty", "external_id": "PD-1", "title": "Disk alert", "severity": "p3"}])
    issue_id = first.get_json()["issue_ids"][0]
    batch(client, auth(), [{"source": "pagerduty", "external_id": "PD-1", "title": "Disk alert", "severity": "p1"}])
    issue = client.get(f"/v1/issues/{issue_id}", headers=auth()).get_json()
    assert issue["severity"] == "critical" and issue["risk_score"] == 90


def test_record_defaults_and_mapping(client, auth):
    response = client.post("/v1/ingest/events", headers=auth(), json={
        "external_id": "JIRA-77", "severity": "p2", "body": "Customer reports it.",
        "source_created_at": "2024-03-01T10:00:00+01:00", "metadata": {"ticket": 77}})
    assert response.status_code == 202
    issue = client.get(f"/v1/issues/{response.get_json()['issue_ids'][0]}", headers=auth()).get_json()
    assert (issue["title"], issue["source"], issue["severity"], issue["description"]) == \
        ("JIRA-77", "custom_api", "high", "Customer reports it.")
    assert issue["created_at"] == "2024-03-01T09:00:00Z" and issue["metadata"] == {"ticket": 77}


def test_single_invalid_record_is_a_validation_error(client, auth):
    response = client.post("/v1/ingest/events", headers=auth(), json={"title": "x", "severity": "urgent"})
    assert response.status_code == 400
    assert "severity" in response.get_json()["error"]["details"]


def test_ingest_needs_the_ingest_scope(client, auth):
    response = client.post("/v1/ingest/events", headers=auth("viewer"), json={"title": "x"})
    assert response.status_code == 403
    assert response.get_json()["error"]["details"]["required_scope"] == "ingest:write"


def test_inferred_fingerprint_is_explained(client, auth):
    issue_id = batch(client, auth(), [{"title": DISK}]).get_json()["issue_ids"][0]
    issue = client.get(f"/v1/issues/{issue_id}", headers=auth()).get_json()
    assert issue["fingerprint"] == {"domain": "storage", "root_cause": "disk_full"}
    assert issue["detection"]["method"] == "similarity"
    assert issue["detection"]["vocabulary"]["matched"]
    assert issue["detection"]["vocabulary"]["fingerprint"] == issue["fingerprint"]


def test_a_pattern_is_created_when_a_similar_report_arrives(client, auth):
    first = batch(client, auth(), [{"title": DISK}]).get_json()["issue_ids"][0]
    assert client.get(f"/v1/issues/{first}", headers=auth()).get_json()["pattern_id"] is None
    second = batch(client, auth(), [{"title": "OSError: [Errno 28] No space left on device while writing /var/log/worker.log"}])
    second = second.get_json()["issue_ids"][0]
    pattern_id = client.get(f"/v1/issues/{second}", headers=auth()).get_json()["pattern_id"]
    assert pattern_id is not None
    assert client.get(f"/v1/issues/{first}", headers=auth()).get_json()["pattern_id"] == pattern_id
    pattern = client.get(f"/v1/patterns/{pattern_id}", headers=auth()).get_json()
    assert pattern["status"] == "watching" and pattern["issue_count"] == 2
    # The vocabulary names the fingerprint (and the pattern) when it is convincing.
    assert pattern["fingerprint"] == {"domain": "storage", "root_cause": "disk_full"}
    detection = client.get(f"/v1/issues/{second}", headers=auth()).get_json()["detection"]
    assert detection["method"] == "similarity" and detection["paired_with"] == first
    assert detection["score"] >= detection["threshold"]
    assert 0 < pattern["risk_score"] <= 100


def test_an_existing_pattern_of_similar_issues_is_joined(client, auth):
    first, second = batch(client, auth(), [{"title": POOL}, {"title": POOL}]).get_json()["issue_ids"]
    pattern_id = client.get(f"/v1/issues/{first}", headers=auth()).get_json()["pattern_id"]
    assert pattern_id and client.get(f"/v1/issues/{second}", headers=auth()).get_json()["pattern_id"] == pattern_id
    third = batch(client, auth(), [{"title": POOL + " (db-2)"}]).get_json()["issue_ids"][0]
    issue = client.get(f"/v1/issues/{third}", headers=auth()).get_json()
    assert issue["pattern_id"] == pattern_id
    assert issue["detection"]["pattern_id"] == pattern_id and issue["detection"]["model_version"]
    assert client.get(f"/v1/patterns/{pattern_id}", headers=auth()).get_json()["issue_count"] == 3


def test_a_provided_fingerprint_is_used_as_is(client, auth):
    records = [{"title": f"Ledger {n} off by a cent", "fingerprint": {"domain": "billing", "root_cause": "rounding"}}
               for n in range(3)]
    ids = batch(client, auth(), records).get_json()["issue_ids"]
    issues = [client.get(f"/v1/issues/{i}", headers=auth()).get_json() for i in ids]
    assert {i["detection"]["method"] for i in issues} == {"provided"}
    assert len({i["pattern_id"] for i in issues}) == 1 and issues[0]["pattern_id"]


def risk_from_the_linked_issues(pattern_id, now):
    """The documented formula, from a fresh read of every linked issue."""
    linked = list(Issue.select().where(Issue.pattern == pattern_id))
    recent = sum(issue.created_at >= now - datetime.timedelta(days=30) for issue in linked)
    return risk_score(collections.Counter(issue.severity for issue in linked), recent,
                      max((issue.created_at for issue in linked), default=None), now)


def test_detected_risk_follows_the_formula_from_the_linked_issues(app, client, auth):
    # More recent issues than the recent count reads, old ones, and every severity.
    severities = ["low", "medium", "high", "critical", "p2"]
    now = datetime.datetime.now(datetime.UTC)
    records = [{"title": f"Ledger {n} off by a cent", "external_id": f"LEDGER-{n}", "severity": severities[n % 5],
                "fingerprint": {"domain": "billing", "root_cause": "rounding"},
                **({"source_created_at": (now - datetime.timedelta(days=40 + n)).isoformat()} if n % 7 == 0 else {})}
               for n in range(RECENT_SATURATION + 60)]
    for start in range(0, len(records), 250):
        assert batch(client, auth(), records[start:start + 250]).status_code == 202
    ids = batch(client, auth(), [{"title": POOL, "source": "logs"}, {"title": POOL, "source": "logs"},
                                 {"title": DISK, "source": "sentry"},
                                 {"title": DISK, "severity": "p1", "source": "sentry"}]).get_json()["issue_ids"]
    assert batch(client, auth(), [{"title": "Ledger 1 off by a cent", "external_id": "LEDGER-1", "severity": "critical",
                                   "fingerprint": {"domain": "billing", "root_cause": "rounding"}}]).status_code == 202
    with app.app_context(), db.connection_context():
        detected = {issue.pattern_id for issue in Issue.select().where(Issue.id.in_(ids) | (Issue.external_id == "LEDGER-1"))}
        assert len(detected) == 3 and None not in detected
        at = utcnow()
        Pattern.rescore(detected, now=at)
        for pattern in Pattern.select().where(Pattern.id.in_(detected)):
            linked = Issue.select().where(Issue.pattern == pattern.id)
            assert pattern.linked_by_severity == {name: linked.where(Issue.severity == name).count()
                                                  for name in pattern.linked_by_severity}
            assert pattern.risk_score == risk_from_the_linked_issues(pattern.id, at), pattern.name


def test_unrecognised_text_gets_no_fingerprint(client, auth):
    issue_id = batch(client, auth(), [{"title": "Button colour slightly off on settings page"}]).get_json()["issue_ids"][0]
    issue = client.get(f"/v1/issues/{issue_id}", headers=auth()).get_json()
    assert issue["fingerprint"] is None and issue["pattern_id"] is None


def test_detection_never_joins_another_workspaces_pattern(client, auth):
    other = auth(workspace=OTHER_WORKSPACE)
    ids = batch(client, other, [{"title": POOL}, {"title": POOL}]).get_json()["issue_ids"]
    pattern_id = client.get(f"/v1/issues/{ids[0]}", headers=other).get_json()["pattern_id"]
    assert pattern_id and pattern_id != "pat_01xyz790"
    assert client.get(f"/v1/patterns/{pattern_id}", headers=auth()).status_code == 404


def test_similar_ranks_the_same_root_cause_first(client, auth):
    ids = batch(client, auth(), [{"title": DISK}, {"title": "Build agent failed: ENOSPC: no space left on device"},
                                 {"title": POOL_2}]).get_json()["issue_ids"]
    response = client.get(f"/v1/issues/{ids[0]}/similar?limit=50", headers=auth())
    assert response.status_code == 200
    data = response.get_json()["data"]
    ranked = [item["issue"]["id"] for item in data]
    assert ids[1] in ranked and (ids[2] not in ranked or ranked.index(ids[1]) < ranked.index(ids[2]))
    assert all(-1 <= item["score"] <= 1 for item in data)
    assert all(item["would_group"] == (item["score"] >= DEFAULT_THRESHOLD) for item in data)
    assert [item["score"] for item in data] == sorted((item["score"] for item in data), reverse=True)
    assert ids[0] not in [item["issue"]["id"] for item in data]


def test_similar_is_scoped_and_validated(client, auth):
    assert client.get("/v1/issues/iss_02def100/similar", headers=auth()).status_code == 404
    assert client.get("/v1/issues/iss_01abc123/similar?limit=0", headers=auth()).status_code == 400


@pytest.mark.live
def test_ten_concurrent_deliveries_of_one_record_leave_one_issue(tmp_path):
    with mock_server(tmp_path) as (base, headers, _):
        record = {"source": "sentry", "external_id": f"DUP-{os.getpid()}-{free_port()}", "title": DISK}

        def deliver(_):
            return requests.post(base + "/v1/ingest/events", headers=headers, json=record, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(deliver, range(10)))
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["issue_ids"][0] for r in responses}) == 1
        found = requests.get(base + "/v1/issues", headers=headers, params={"source": "sentry", "limit": 100},
                             timeout=5).json()["data"]
        assert sum(1 for item in found if item["external_id"] == record["external_id"]) == 1


@pytest.mark.live
def test_concurrent_batches_create_one_pattern_per_fingerprint_and_exact_counters(tmp_path, make_app):
    # Each batch names the same new fingerprints in another order, and joins seed patterns.
    run = f"{os.getpid()}-{free_port()}"
    keys = [("billing", f"rounding-{run}-{n}") for n in range(6)] + [("caching", "stale_cache")]
    batches = [[{"source": "ledger", "external_id": f"{run}-{b}-{n}", "title": f"Ledger {n} off",
                 "severity": ["low", "high", "critical"][(b + n) % 3],
                 "fingerprint": dict(zip(("domain", "root_cause"), keys[(n * (b + 1)) % len(keys)]))}
                for n in range(60)] for b in range(6)]
    with mock_server(tmp_path, WEB_CONCURRENCY="2") as (base, headers, _):
        def deliver(records):
            return requests.post(base + "/v1/ingest/batch", headers=headers, json={"records": records}, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert {response.status_code for response in pool.map(deliver, batches)} == {202}
        patterns = requests.get(base + "/v1/patterns", headers=headers, params={"limit": 100}, timeout=5).json()["data"]

        def linked(pattern_id, **filters):
            return requests.get(base + "/v1/issues", headers=headers, timeout=5, params={
                "pattern_id": pattern_id, "limit": 1, **filters}).json()["page"]["total"]

        with_key = collections.Counter(tuple(p["fingerprint"].values()) for p in patterns if p["fingerprint"])
        assert all(with_key[key] == 1 for key in keys), with_key
        for pattern in patterns:
            assert pattern["issue_count"] == linked(pattern["id"])
    # The severity counters, which the API does not show, through the same database.
    app = make_app(DATABASE_URL=TEST_DATABASE_URL if ON_POSTGRES else f"sqlite:///{tmp_path / 'live.db'}")
    with app.app_context(), db.connection_context():
        for pattern in Pattern.select().where(Pattern.id.in_([p["id"] for p in patterns])):
            issues = Issue.select().where(Issue.pattern == pattern.id)
            assert pattern.linked_by_severity == {name: issues.where(Issue.severity == name).count()
                                                  for name in pattern.linked_by_severity}
