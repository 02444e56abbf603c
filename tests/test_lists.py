"""Spec §4 on both databases: every filter and sort, comma-OR, cursor binding, stable walks."""
import datetime

import pytest

from models import Issue, db

ISSUE_SORTS = ["created_at", "updated_at", "severity", "risk_score"]
PATTERN_SORTS = ["risk_score", "issue_count", "last_seen_at", "created_at"]
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def walk(client, headers, url, params=None, limit=10):
    items, cursor = [], None
    for _ in range(1000):
        query = {**(params or {}), "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(url, headers=headers, query_string=query)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        items.extend(body["data"])
        cursor = body["page"]["next_cursor"]
        if not body["page"]["has_more"]:
            return items, body["page"]["total"]
    raise AssertionError("walk did not end")


def everything(client, headers):
    return walk(client, headers, "/v1/issues", limit=100)[0]


def sort_key(item, field):
    value = item[field]
    return SEVERITY_RANK[value] if field == "severity" else value


@pytest.mark.parametrize("field", ISSUE_SORTS)
@pytest.mark.parametrize("descending", [True, False])
def test_issue_sorts_walk_every_row_once_in_order(client, auth, field, descending):
    sort = ("-" if descending else "") + field
    items, total = walk(client, auth(), "/v1/issues", {"sort": sort}, limit=7)
    assert len(items) == total == 87 == len({item["id"] for item in items})
    keys = [(sort_key(item, field), item["id"]) for item in items]
    assert keys == sorted(keys, reverse=descending)


@pytest.mark.parametrize("field", PATTERN_SORTS)
@pytest.mark.parametrize("descending", [True, False])
def test_pattern_sorts_walk_every_row_once_in_order(client, auth, field, descending):
    client.post("/v1/patterns", headers=auth(), json={"name": "No issues yet"})  # last_seen_at null
    sort = ("-" if descending else "") + field
    items, total = walk(client, auth(), "/v1/patterns", {"sort": sort}, limit=2)
    assert len(items) == total == 7 == len({item["id"] for item in items})
    present = [item for item in items if item[field] is not None]
    keys = [(item[field], item["id"]) for item in present]
    assert keys == sorted(keys, reverse=descending)
    assert items[len(present):] == [item for item in items if item[field] is None]  # nulls last


@pytest.mark.parametrize("name,values", [
    ("status", ["open"]), ("status", ["open", "in_progress"]),
    ("severity", ["critical"]), ("severity", ["high", "critical"]),
    ("source", ["sentry", "github"]), ("pattern_id", ["pat_01xyz789", "pat_01xyz790"]),
])
def test_issue_filters_match_exactly_the_rows_that_qualify(client, auth, name, values):
    rows = everything(client, auth())
    expected = {row["id"] for row in rows if row[name] in values}
    items, total = walk(client, auth(), "/v1/issues", {name: ",".join(values)})
    assert {item["id"] for item in items} == expected and total == len(expected) > 0


def test_status_and_severity_filters_combine_with_and(client, auth):
    rows = everything(client, auth())
    expected = {r["id"] for r in rows if r["status"] in ("open", "in_progress") and r["severity"] in ("high", "critical")}
    items, total = walk(client, auth(), "/v1/issues", {"status": "open,in_progress", "severity": "high,critical"})
    assert {item["id"] for item in items} == expected and total == len(expected)


def test_created_date_range(client, auth):
    rows = everything(client, auth())
    after, before = "2023-12-01T00:00:00Z", "2024-01-01T00:00:00Z"
    expected = {r["id"] for r in rows if after <= r["created_at"] < before}
    items, _ = walk(client, auth(), "/v1/issues", {"created_after": after, "created_before": before})
    assert {item["id"] for item in items} == expected and expected


def test_created_after_accepts_other_timezones(client, auth):
    utc = walk(client, auth(), "/v1/issues", {"created_after": "2024-01-10T00:00:00Z"})[1]
    shifted = walk(client, auth(), "/v1/issues", {"created_after": "2024-01-10T02:00:00+02:00"})[1]
    assert utc == shifted > 0


def test_inverted_date_range_is_refused(client, auth):
    response = client.get("/v1/issues?created_after=2024-02-01T00:00:00Z&created_before=2024-01-01T00:00:00Z",
                          headers=auth())
    assert response.status_code == 400


def test_q_finds_words_not_substrings(client, auth):
    items, _ = walk(client, auth(), "/v1/issues", {"q": "gateway"})
    assert items and all("gateway" in (i["title"] + i["description"]).lower() for i in items)
    # "ateway" is inside "gateway" but is not a word: a substring scan would find it.
    assert walk(client, auth(), "/v1/issues", {"q": "ateway"})[1] == 0


def test_q_stems_and_supports_phrases_and_exclusion(client, auth):
    assert walk(client, auth(), "/v1/issues", {"q": "timeouts"})[1] == walk(client, auth(), "/v1/issues", {"q": "timeout"})[1]
    phrase = walk(client, auth(), "/v1/issues", {"q": '"payment gateway"'})[0]
    assert phrase and all("payment gateway" in (i["title"] + " " + i["description"]).lower() for i in phrase)
    excluded = walk(client, auth(), "/v1/issues", {"q": "gateway -checkout"})[0]
    assert all("checkout" not in (i["title"] + i["description"]).lower() for i in excluded)


def test_q_is_ordered_by_the_chosen_sort(client, auth):
    items, _ = walk(client, auth(), "/v1/issues", {"q": "timeout", "sort": "created_at"})
    keys = [(i["created_at"], i["id"]) for i in items]
    assert len(keys) > 1 and keys == sorted(keys)


@pytest.mark.parametrize("q", ["'; DROP TABLE issue; --", 'unbalanced "quote', "a OR", "NOT", "*", "(((", "title:x"])
def test_q_with_search_syntax_noise_never_fails(client, auth, q):
    response = client.get("/v1/issues", headers=auth(), query_string={"q": q})
    assert response.status_code == 200
    assert walk(client, auth(), "/v1/issues")[1] == 87


def test_q_over_200_characters_is_refused(client, auth):
    response = client.get("/v1/issues", headers=auth(), query_string={"q": "x" * 201})
    assert response.status_code == 400
    assert "q" in response.get_json()["error"]["details"]


@pytest.mark.parametrize("sort", ["title", "-id", "--created_at", "created_at,id", ""])
def test_unknown_sort_is_refused(client, auth, sort):
    response = client.get("/v1/issues", headers=auth(), query_string={"sort": sort})
    assert response.status_code == 400
    assert "sort" in response.get_json()["error"]["details"]


@pytest.mark.parametrize("value", ["urgent", ",", "open,bogus"])
def test_unknown_filter_value_is_refused(client, auth, value):
    response = client.get("/v1/issues", headers=auth(), query_string={"status": value})
    assert response.status_code == 400
    assert "status" in response.get_json()["error"]["details"]


def test_filter_list_tolerates_a_trailing_comma(client, auth):
    plain = client.get("/v1/issues?status=open", headers=auth()).get_json()["page"]["total"]
    assert client.get("/v1/issues?status=open,", headers=auth()).get_json()["page"]["total"] == plain


@pytest.mark.parametrize("changed", [{"sort": "created_at"}, {"status": "closed"}, {"q": "timeout"}])
def test_cursor_replayed_with_other_filters_or_sort_is_malformed(client, auth, changed):
    cursor = client.get("/v1/issues?limit=5", headers=auth()).get_json()["page"]["next_cursor"]
    response = client.get("/v1/issues", headers=auth(), query_string={"cursor": cursor, "limit": 5, **changed})
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "malformed cursor token"


def test_cursor_of_one_patterns_issues_is_malformed_for_another(client, auth):
    cursor = client.get("/v1/patterns/pat_01xyz789/issues?limit=2", headers=auth()).get_json()["page"]["next_cursor"]
    response = client.get("/v1/patterns/pat_01xyz790/issues", headers=auth(), query_string={"cursor": cursor})
    assert response.status_code == 400


def test_pattern_filters(client, auth):
    rows = walk(client, auth(), "/v1/patterns", limit=100)[0]
    for params, keep in [
        ({"status": "active,resolved"}, lambda p: p["status"] in ("active", "resolved")),
        ({"domain": "payments,database"}, lambda p: p["fingerprint"]["domain"] in ("payments", "database")),
        ({"risk_min": 30, "risk_max": 70}, lambda p: 30 <= p["risk_score"] <= 70),
        ({"q": "timeout"}, lambda p: "timeout" in p["name"].lower()),
    ]:
        items, total = walk(client, auth(), "/v1/patterns", params)
        expected = {p["id"] for p in rows if keep(p)}
        assert {p["id"] for p in items} == expected and total == len(expected) > 0, params


@pytest.mark.parametrize("params", [{"risk_min": 101}, {"risk_max": -1}, {"risk_min": "x"}])
def test_pattern_risk_bounds_are_validated(client, auth, params):
    assert client.get("/v1/patterns", headers=auth(), query_string=params).status_code == 400


def test_pattern_issues_takes_the_issue_list_parameters(client, auth):
    items, total = walk(client, auth(), "/v1/patterns/pat_01xyz789/issues", {"sort": "-severity"}, limit=4)
    assert total == 14 == len(items)
    assert all(item["pattern_id"] == "pat_01xyz789" for item in items)
    assert client.get("/v1/patterns/pat_02pqr111/issues", headers=auth()).status_code == 404


def test_walk_while_inserting_returns_each_preexisting_row_once(app, client, auth):
    """Many rows share one created_at; new rows arrive at the head between pages."""
    tie = datetime.datetime(2024, 1, 10, 12, 0, 0)
    with app.app_context(), db.connection_context():
        Issue.insert_many([{"id": f"iss_tie{n:03d}", "workspace": "ws_01abc123", "title": f"Tied {n}",
                            "severity": "low", "created_at": tie, "updated_at": tie}
                           for n in range(60)]).execute()
    headers = auth()
    before = {item["id"] for item in everything(client, headers)}
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/issues", headers=headers, query_string=query).get_json()
        seen.extend(item["id"] for item in body["data"])
        client.post("/v1/issues", headers=headers, json={"title": f"Arrived during page {pages}"})
        pages += 1
        if not body["page"]["has_more"]:
            break
        cursor = body["page"]["next_cursor"]
    preexisting = [item for item in seen if item in before]
    assert len(preexisting) == len(set(preexisting)) == len(before) == 147
