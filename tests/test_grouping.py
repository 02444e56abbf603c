"""Similarity grouping and the corrections it learns from: pinning, merge, split, re-analysis,
regroup, the threshold's calibration, and the derived centroids."""
import numpy as np
import pytest

from conftest import OTHER_WORKSPACE, SEED_WORKSPACE
from models import Issue, Pattern, SourceProfile, db
from models.grouping import corrections, similarity

# Two causes, each in a few wordings.
DISK = ["OSError: [Errno 28] No space left on device while writing /var/log/app.log",
        "OSError: [Errno 28] No space left on device while writing /var/log/worker.log",
        "OSError: [Errno 28] No space left on device while writing /var/log/cron.log"]
CERT = ["x509: certificate has expired or is not yet valid: current time is after notAfter for api.example.com",
        "x509: certificate has expired or is not yet valid: current time is after notAfter for web.example.com",
        "x509: certificate has expired or is not yet valid: current time is after notAfter for cdn.example.com"]


def ingest(client, headers, titles, source="tests"):
    response = client.post("/v1/ingest/batch", headers=headers,
                           json={"records": [{"title": title, "source": source} for title in titles]})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["issue_ids"]


def issue(client, headers, issue_id):
    return client.get(f"/v1/issues/{issue_id}", headers=headers).get_json()


def pattern_of(client, headers, issue_id):
    return issue(client, headers, issue_id)["pattern_id"]


def test_reports_alike_form_a_pattern_and_others_wait(client, auth):
    headers = auth()
    disk = ingest(client, headers, DISK)
    cert = ingest(client, headers, CERT[:1])
    patterns = {pattern_of(client, headers, i) for i in disk}
    assert len(patterns) == 1 and None not in patterns
    lone = issue(client, headers, cert[0])
    assert lone["pattern_id"] is None and lone["detection"]["method"] == "similarity"
    assert lone["detection"]["reason"] and lone["detection"]["threshold"] == similarity.DEFAULT_THRESHOLD


def test_an_explanation_names_the_nearest_earlier_members_with_their_scores(app, client, auth):
    headers = auth()
    first = ingest(client, headers, DISK[:2])
    later = ingest(client, headers, DISK[2:] + CERT[:1])
    pattern_id = pattern_of(client, headers, first[0])
    detection = issue(client, headers, later[0])["detection"]
    assert detection["pattern_id"] == pattern_id
    nearest = detection["nearest"]
    # The pattern's members before that write, best first, each with its score against the issue.
    assert sorted(entry["issue_id"] for entry in nearest) == sorted(first)
    assert [entry["score"] for entry in nearest] == sorted((entry["score"] for entry in nearest), reverse=True)
    with app.app_context(), db.connection_context():
        index = similarity.Index(SEED_WORKSPACE)
        mine = index.query(*vector_and_source(later[0]))
        for entry in nearest:
            theirs = index.query(*vector_and_source(entry["issue_id"]))
            expected = 0.5 * float(mine[0] @ theirs[0]) + 0.5 * float(mine[1] @ theirs[1])
            assert entry["score"] == pytest.approx(expected, abs=2e-4)
    # An issue left waiting names nobody.
    assert "nearest" not in issue(client, headers, later[1])["detection"]


def vector_and_source(issue_id):
    from models.grouping import representation

    row = Issue.get_by_id(issue_id)
    return representation.decode_one(row.embedding), row.source


def test_patching_a_pattern_pins_the_issue_and_reanalysis_refuses_it(client, auth):
    headers = auth()
    ids = ingest(client, headers, DISK[:2])
    response = client.patch(f"/v1/issues/{ids[0]}", headers=headers, json={"pattern_id": "pat_01xyz789"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["pinned"] is True and body["detection"]["method"] == "manual"
    assert client.post(f"/v1/issues/{ids[0]}/reanalyze", headers=headers).status_code == 409
    # A new report like it does not move it, and the pin survives a repeat delivery.
    ingest(client, headers, DISK[2:])
    assert pattern_of(client, headers, ids[0]) == "pat_01xyz789"
    # Unpinning hands it back to automatic grouping.
    response = client.patch(f"/v1/issues/{ids[0]}", headers=headers, json={"pinned": False})
    assert response.status_code == 200 and response.get_json()["pinned"] is False
    assert client.patch(f"/v1/issues/{ids[0]}", headers=headers, json={"pinned": True}).status_code == 400


def test_reanalyze_places_an_unpinned_issue_and_explains_it(client, auth):
    headers = auth()
    ids = ingest(client, headers, DISK)
    response = client.post(f"/v1/issues/{ids[1]}/reanalyze", headers=headers)
    assert response.status_code == 200
    detection = response.get_json()["detection"]
    assert detection["method"] == "similarity" and detection["pattern_id"] == pattern_of(client, headers, ids[0])
    assert detection["score"] >= detection["threshold"] and detection["model_version"]
    assert client.post("/v1/issues/iss_02def100/reanalyze", headers=headers).status_code == 404


def test_a_merge_moves_the_issues_and_later_reports_join_the_target(client, auth):
    headers = auth()
    disk = ingest(client, headers, DISK[:2])
    source = pattern_of(client, headers, disk[0])
    target = client.post("/v1/patterns", headers=headers, json={"name": "Storage"}).get_json()["id"]
    response = client.post(f"/v1/patterns/{target}/merge", headers=headers, json={"source_pattern_ids": [source]})
    assert response.status_code == 200 and response.get_json()["issue_count"] == 2
    merged = client.get(f"/v1/patterns/{source}", headers=headers).get_json()
    assert merged["status"] == "merged" and merged["merged_into"] == target and merged["issue_count"] == 0
    listed = client.get("/v1/patterns?limit=100", headers=headers).get_json()["data"]
    assert source not in {p["id"] for p in listed}
    assert source in {p["id"] for p in client.get("/v1/patterns?status=merged", headers=headers).get_json()["data"]}
    later = ingest(client, headers, DISK[2:])
    assert pattern_of(client, headers, later[0]) == target
    # A merged pattern takes no new links.
    response = client.patch(f"/v1/issues/{later[0]}", headers=headers, json={"pattern_id": source})
    assert response.status_code == 422 and target in response.get_json()["error"]["message"]


@pytest.mark.parametrize("body, status", [
    ({"source_pattern_ids": ["pat_01xyz789"]}, 422),  # into itself
    ({"source_pattern_ids": ["pat_nosuch"]}, 422),
    ({"source_pattern_ids": ["pat_02pqr111"]}, 422),  # another workspace's
    ({"source_pattern_ids": []}, 400),
    ({"source_pattern_ids": ["iss_01abc123"]}, 400),
    ({}, 400),
])
def test_merge_refuses_bad_sources(client, auth, body, status):
    before = client.get("/v1/patterns/pat_01xyz789", headers=auth()).get_json()
    response = client.post("/v1/patterns/pat_01xyz789/merge", headers=auth(), json=body)
    assert response.status_code == status and "error" in response.get_json()
    assert client.get("/v1/patterns/pat_01xyz789", headers=auth()).get_json() == before


def test_merge_and_split_of_another_workspaces_pattern_are_not_found(client, auth):
    assert client.post("/v1/patterns/pat_02pqr111/merge", headers=auth(),
                       json={"source_pattern_ids": ["pat_01xyz790"]}).status_code == 404
    assert client.post("/v1/patterns/pat_02pqr111/split", headers=auth(),
                       json={"issue_ids": ["iss_02def100"]}).status_code == 404


def test_a_split_sticks_through_fifty_reingests(app, client, auth):
    headers = auth()
    ids = ingest(client, headers, DISK + CERT)
    pattern = client.post("/v1/patterns", headers=headers, json={"name": "Everything"}).get_json()["id"]
    client.post("/v1/issues/bulk", headers=headers, json={"ids": ids, "op": "link_pattern", "value": pattern})
    response = client.post(f"/v1/patterns/{pattern}/split", headers=headers,
                           json={"issue_ids": ids[3:], "name": "Certificates"})
    assert response.status_code == 201
    split = response.get_json()
    assert split["name"] == "Certificates" and split["issue_count"] == 3
    for n in range(25):
        ingest(client, headers, [DISK[n % 3] + f" ({n})", CERT[n % 3] + f" ({n})"])
    for pattern_id in (pattern, split["id"]):
        assert client.get(f"/v1/patterns/{pattern_id}", headers=headers).get_json()["status"] != "merged"
    assert {pattern_of(client, headers, i) for i in ids[:3]} == {pattern}
    assert {pattern_of(client, headers, i) for i in ids[3:]} == {split["id"]}
    with app.app_context(), db.connection_context():
        proposed = {frozenset(pair[:2]) for pair in corrections.regroup("ws_01abc123")["merges"]}
    assert frozenset((pattern, split["id"])) not in proposed


@pytest.mark.parametrize("body", [
    {"issue_ids": ["iss_02def100"]},  # not a member
    {"issue_ids": ["iss_nosuch"]},
])
def test_split_refuses_issues_that_are_not_members(client, auth, body):
    response = client.post("/v1/patterns/pat_01xyz789/split", headers=auth(), json=body)
    assert response.status_code == 422
    assert "issue_ids" in response.get_json()["error"]["details"]


def test_split_must_leave_an_issue(client, auth):
    headers = auth()
    ids = ingest(client, headers, DISK[:2])
    pattern = pattern_of(client, headers, ids[0])
    response = client.post(f"/v1/patterns/{pattern}/split", headers=headers, json={"issue_ids": ids})
    assert response.status_code == 422


def test_regroup_never_moves_pinned_issues_nor_merges_split_pairs(app, client, auth):
    headers = auth()
    ids = ingest(client, headers, DISK + CERT)
    pattern = client.post("/v1/patterns", headers=headers, json={"name": "Pinned disk"}).get_json()["id"]
    client.patch(f"/v1/issues/{ids[0]}", headers=headers, json={"pattern_id": pattern})
    with app.app_context(), db.connection_context():
        dry = corrections.regroup("ws_01abc123", apply=False)
        assert ids[0] not in {move[0] for move in dry["moves"]}
        applied = corrections.regroup("ws_01abc123", apply=True)
        # The dry run printed what applying does (new patterns get new ids each time).
        assert [move[:2] for move in applied["moves"]] == [move[:2] for move in dry["moves"]]
        assert len(applied["merges"]) == len(dry["merges"])
        assert corrections.regroup("ws_01abc123", apply=False)["moves"] == []  # applied: nothing left
    assert pattern_of(client, headers, ids[0]) == pattern


def test_regroup_command_prints_its_plan(app):
    result = app.test_cli_runner().invoke(args=["regroup", "--workspace", "ws_01abc123", "--dry-run"])
    assert result.exit_code == 0 and "would make" in result.output


def test_corrections_calibrate_the_threshold_within_bounds():
    assert similarity.calibrated_threshold([]) == similarity.DEFAULT_THRESHOLD
    # Links of waiting issues at 0.18 teach a lower threshold...
    lower = similarity.calibrated_threshold([(0.18, True)] * 5)
    assert similarity.THRESHOLD_FLOOR <= lower < similarity.DEFAULT_THRESHOLD and lower <= 0.18
    # ...unlinks of joins at 0.5 a higher one, never past the ceiling.
    higher = similarity.calibrated_threshold([(0.5, False)] * 5)
    assert similarity.DEFAULT_THRESHOLD < higher <= similarity.THRESHOLD_CEILING and higher > 0.5
    # Evidence beyond the bounds cannot be met by any allowed threshold: it stays put.
    assert similarity.calibrated_threshold([(0.01, True)] * 5) == similarity.DEFAULT_THRESHOLD


def test_linking_a_waiting_issue_lowers_the_workspace_threshold(app, client, auth):
    headers = auth()
    ids = ingest(client, headers, DISK[:2])
    pattern = pattern_of(client, headers, ids[0])
    other = ingest(client, headers, ["Build agent failed: ENOSPC: no space left on device"])[0]
    if pattern_of(client, headers, other) is None:
        client.patch(f"/v1/issues/{other}", headers=headers, json={"pattern_id": pattern})
        with app.app_context(), db.connection_context():
            assert similarity.GroupingCorrection.select().where(
                similarity.GroupingCorrection.issue == other).count() == 1
            score = similarity.GroupingCorrection.get(similarity.GroupingCorrection.issue == other).score
            threshold = similarity.GroupingSettings.threshold_of("ws_01abc123")
            assert threshold == similarity.calibrated_threshold([(score, True)])
            assert threshold <= max(score, similarity.THRESHOLD_FLOOR) or threshold == similarity.DEFAULT_THRESHOLD


def test_grouping_never_crosses_workspaces(client, auth):
    ours = ingest(client, auth(), DISK[:2])
    theirs = ingest(client, auth(workspace=OTHER_WORKSPACE), DISK[2:])
    assert pattern_of(client, auth(), ours[0]) != pattern_of(client, auth(workspace=OTHER_WORKSPACE), theirs[0])
    similar = client.get(f"/v1/issues/{ours[0]}/similar?limit=50", headers=auth()).get_json()["data"]
    assert theirs[0] not in {item["issue"]["id"] for item in similar}


def derived_data_is_exact(app):
    """Every pattern's centroid and every source profile equal a fresh recomputation."""
    with app.app_context(), db.connection_context():
        for pattern in Pattern.select():
            fresh = Pattern.recomputed_centroid(pattern.id)
            if fresh[Pattern.centroid] is None:
                assert pattern.centroid is None and pattern.centroid_weight == 0
                continue
            stored = np.frombuffer(bytes(pattern.centroid), np.float32)
            assert np.allclose(stored, np.frombuffer(fresh[Pattern.centroid], np.float32), atol=1e-3)
            assert pattern.centroid_weight == pytest.approx(fresh[Pattern.centroid_weight])
            assert pattern.source_weights == pytest.approx(fresh[Pattern.source_weights])
        for workspace in ("ws_01abc123", OTHER_WORKSPACE):
            stored = {row.source: (row.count, np.frombuffer(bytes(row.total), np.float32))
                      for row in SourceProfile.select().where(SourceProfile.workspace == workspace)}
            SourceProfile.recount(workspace)
            fresh = {row.source: (row.count, np.frombuffer(bytes(row.total), np.float32))
                     for row in SourceProfile.select().where(SourceProfile.workspace == workspace)}
            assert {s: c for s, (c, _) in stored.items() if c} == {s: c for s, (c, _) in fresh.items() if c}
            for source, (count, total) in fresh.items():
                assert np.allclose(stored[source][1], total, atol=1e-3)


def test_regroup_embeds_issues_stored_without_a_representation(app):
    with app.app_context(), db.connection_context():
        Issue.update(embedding=None).where(Issue.workspace == "ws_01abc123").execute()
    result = app.test_cli_runner().invoke(args=["regroup", "--workspace", "ws_01abc123"])
    assert result.exit_code == 0 and "embedded 87 issues" in result.output
    with app.app_context(), db.connection_context():
        assert not Issue.select().where((Issue.workspace == "ws_01abc123") & Issue.embedding.is_null()).exists()
        pattern = Pattern.get_by_id("pat_01xyz789")
        assert pattern.centroid is not None
    derived_data_is_exact(app)


def test_the_model_embeds_as_wordllama_does():
    """Our pooling of WordLlama's bundled table (float16, per text) against the package's own
    inference (float32, padded batches)."""
    import os

    import wordllama

    from models.grouping import representation

    reference = wordllama.WordLlama.load(cache_dir=os.path.dirname(wordllama.__file__), disable_download=True)
    texts = DISK + CERT + ["ünïcödé ☃ — ταυτότητα", "word " * 2_000, "x"]
    ours = representation.model().embed(texts)
    assert np.abs(ours - reference.embed(texts, norm=True)).max() < 1e-5
    assert not representation.model().embed([""]).any()  # nothing to pool: a zero vector, not NaN


def test_an_issue_a_person_unlinked_is_never_paired_by_later_reports(client, auth):
    headers = auth()
    first = ingest(client, headers, DISK[:1])[0]
    response = client.patch(f"/v1/issues/{first}", headers=headers, json={"pattern_id": None})
    assert response.status_code == 200 and response.get_json()["pinned"] is True
    later = ingest(client, headers, DISK[1:])
    assert issue(client, headers, first)["pattern_id"] is None
    assert len({pattern_of(client, headers, issue_id) for issue_id in later} - {None}) == 1  # they pair


def test_an_issue_waiting_on_its_fingerprint_is_not_paired_by_similarity(client, auth):
    headers = auth()
    fingerprint = {"domain": "storage", "root_cause": "disk_full"}
    response = client.post("/v1/ingest/batch", headers=headers, json={"records": [
        {"title": DISK[0], "source": "tests", "fingerprint": fingerprint}]})
    assert response.status_code == 202, response.get_json()
    first = response.get_json()["issue_ids"][0]
    assert issue(client, headers, first)["pattern_id"] is None  # the fingerprint has not recurred
    ingest(client, headers, DISK[1:])
    assert issue(client, headers, first)["pattern_id"] is None
    assert issue(client, headers, first)["detection"]["method"] == "provided"


def test_a_waiting_issue_joins_a_pattern_formed_after_it_arrived(app, client, auth):
    """W waits; later X and Y pair into a pattern close enough to W: W joins it in that write,
    instead of waiting for a report to pair with it."""
    from models import events
    from models.base import utcnow
    from models.grouping.similarity import GroupingSettings
    from models.ingest import Grouper

    headers = auth()
    with app.app_context(), db.connection_context():
        GroupingSettings.insert(workspace=SEED_WORKSPACE, threshold=0.99).execute()  # nothing pairs
    w, x, y = ingest(client, headers, ["OSError: [Errno 28] No space left on device while writing /tmp/upload.bin",
                                       DISK[0], DISK[1]])
    with app.app_context(), db.connection_context():
        probe = similarity.Index(SEED_WORKSPACE)
        raw = {issue_id: vector_and_source(issue_id) for issue_id in (w, x, y)}
        qw, qx, qy = (probe.query(*raw[issue_id]) for issue_id in (w, x, y))
        score = lambda a, b: 0.5 * float(a[0] @ b[0]) + 0.5 * float(a[1] @ b[1])  # noqa: E731
        pattern = probe.query(raw[x][0] + raw[y][0] - probe.means[raw[x][1]], raw[y][1])  # X + Y, centred
        threshold = min(score(qw, pattern), score(qx, qy) - similarity.PAIR_MARGIN) - 0.001
        assert score(qw, qx) < threshold + similarity.PAIR_MARGIN  # W never pairs with X itself
        with events.transaction():
            grouper = Grouper(SEED_WORKSPACE, utcnow(), similarity_index=similarity.Index(SEED_WORKSPACE, threshold))
            for issue_id in (x, y):
                grouper.place(grouper.track(Issue.get_by_id(issue_id)))
            Pattern.links_changed(SEED_WORKSPACE, grouper.moves(), new=grouper.created)
    formed = pattern_of(client, headers, x)
    assert formed is not None and pattern_of(client, headers, y) == formed
    adopted = issue(client, headers, w)
    assert adopted["pattern_id"] == formed
    assert adopted["detection"]["method"] == "similarity" and adopted["detection"]["score"] >= threshold


def test_the_waiting_issues_are_read_through_their_own_index(app):
    """Placement reads a workspace's most recent waiting issues on every write: by the partial
    index of them, not by walking the workspace's issues (linked ones are most of them)."""
    from conftest import ON_POSTGRES

    with app.app_context(), db.connection_context():
        index = similarity.Index(SEED_WORKSPACE)
        sql, params = index.waiting_query.sql()
        if ON_POSTGRES:
            assert db.execute_sql("SELECT 1 FROM pg_indexes WHERE indexname = 'issue_waiting'").fetchone()
        else:
            plan = " ".join(str(row) for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert "USING INDEX issue_waiting" in plan, plan
