"""`flask generate`: a workspace of realistic synthetic issues, exact counters, searchable."""
import re

import pytest

from models import Event, Issue, Membership, Pattern, db
from models.base import is_postgres

WORKSPACE = "ws_synth"
ISSUES = 500
PATTERNS = 12


@pytest.fixture
def generated(app):
    """Generate once; returns the owner's user id the command printed."""
    result = app.test_cli_runner().invoke(args=[
        "generate", "--workspace", WORKSPACE, "--issues", str(ISSUES), "--patterns", str(PATTERNS),
        "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert f"workspace: {WORKSPACE}" in result.output
    return re.search(r"^owner: (usr_\w+)$", result.output, re.M).group(1)


@pytest.fixture
def owner_headers(generated, token_for):
    return {"Authorization": f"Bearer {token_for('owner', WORKSPACE, user_id=generated)}"}


def test_generate_fills_a_new_workspace_with_an_owner(app, generated):
    with app.app_context(), db.connection_context():
        assert Issue.in_workspace(WORKSPACE).count() == ISSUES
        assert Pattern.in_workspace(WORKSPACE).count() == PATTERNS
        assert Membership.find(generated, WORKSPACE).role == "owner"
        linked = Issue.in_workspace(WORKSPACE).where(Issue.pattern.is_null(False)).count()
        assert 0.7 * ISSUES < linked < 0.9 * ISSUES
        assert not Event.select().where(Event.workspace == WORKSPACE).exists()


def test_generated_issues_are_skewed_and_consistent(app, generated):
    with app.app_context(), db.connection_context():
        issues = list(Issue.in_workspace(WORKSPACE))
    done = [issue for issue in issues if issue.status in ("resolved", "closed")]
    assert len(done) > len(issues) / 2
    assert sum(issue.severity in ("low", "medium") for issue in issues) > len(issues) / 2
    assert all(issue.risk_score == {"low": 20, "medium": 45, "high": 70, "critical": 90}[issue.severity]
               for issue in issues)
    assert all(issue.resolved_at is not None for issue in done)
    assert all(issue.created_at <= issue.updated_at for issue in issues)
    assert len({issue.title for issue in issues}) > ISSUES / 2


def test_pattern_counters_are_exact(app, generated):
    with app.app_context(), db.connection_context():
        for pattern in Pattern.in_workspace(WORKSPACE):
            linked = Issue.select().where(Issue.pattern == pattern.id)
            assert pattern.issue_count == linked.count()
            newest = linked.order_by(Issue.created_at.desc()).first()
            assert pattern.last_seen_at == (newest.created_at if newest else None)


def test_word_search_finds_generated_words(app, client, owner_headers):
    with app.app_context(), db.connection_context():
        expected = sum(bool(re.search(r"\btimeouts?\b", f"{title} {description}", re.I))
                       for title, description in Issue.in_workspace(WORKSPACE)
                       .select(Issue.title, Issue.description).tuples())
    assert expected > ISSUES / 10
    response = client.get("/v1/issues?q=timeout&limit=100", headers=owner_headers)
    assert response.status_code == 200
    assert response.get_json()["page"]["total"] == expected


def test_search_index_stays_in_sync_after_generating(app, client, owner_headers):
    if not is_postgres():
        with app.app_context(), db.connection_context():
            db.execute_sql("INSERT INTO issue_fts(issue_fts) VALUES ('integrity-check')")
    created = client.post("/v1/issues", json={"title": "Quokka exporter crashed"}, headers=owner_headers)
    assert created.status_code == 201
    found = client.get("/v1/issues?q=quokka", headers=owner_headers).get_json()
    assert [issue["id"] for issue in found["data"]] == [created.get_json()["id"]]


def test_the_api_lists_generated_issues_newest_first(client, owner_headers):
    body = client.get("/v1/issues?limit=100", headers=owner_headers).get_json()
    assert body["page"]["total"] == ISSUES
    assert body["page"]["has_more"] is True
    keys = [(issue["created_at"], issue["id"]) for issue in body["data"]]
    assert keys == sorted(keys, reverse=True)
    patterns = client.get("/v1/patterns?sort=-issue_count&limit=100", headers=owner_headers).get_json()
    assert patterns["page"]["total"] == PATTERNS
    counts = [pattern["issue_count"] for pattern in patterns["data"]]
    assert counts[0] > 3 * counts[-1]  # a few patterns hold most of the issues


def test_generate_refuses_a_workspace_that_has_issues(app):
    result = app.test_cli_runner().invoke(args=["generate", "--workspace", "ws_01abc123", "--issues", "10"])
    assert result.exit_code != 0
    assert "already has issues" in result.output


def test_generate_with_rates_makes_patterns_of_known_rates_and_predicts_them(app):
    result = app.test_cli_runner().invoke(args=[
        "generate", "--workspace", "ws_rates", "--issues", "3000", "--patterns", "20", "--rates"])
    assert result.exit_code == 0, result.output
    rates = re.findall(r"^rate (pat_\w+): (poisson|bursty) ([\d.]+) episodes/day", result.output, re.M)
    assert len(rates) == 20 and {kind for _, kind, _ in rates} == {"poisson", "bursty"}
    with app.app_context(), db.connection_context():
        from models import Prediction

        assert not Issue.in_workspace("ws_rates").where(Issue.pattern.is_null()).exists()
        assert 2000 < Issue.in_workspace("ws_rates").count() < 4000
        assert Prediction.in_workspace("ws_rates").count() == 20 * 3
        assert all("synthetic" in pattern.tags for pattern in Pattern.in_workspace("ws_rates"))
