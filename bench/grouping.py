"""Detection quality through the real API: the labelled evaluation set (bench/data) is ingested
WITHOUT fingerprints into a fresh workspace, then

- pairwise precision and recall of the resulting grouping (two issues are grouped when they
  landed in the same pattern) against the labels, on the whole set and on the held-out third
  (ids divisible by 3, never looked at while writing the vocabulary);
- `GET /v1/issues/{id}/similar?limit=1`: how often the top answer has the same root cause.

    .venv/bin/python bench/grouping.py [--misgroupings 20]
"""
import argparse
import collections
import itertools
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REPORTS = os.path.join(ROOT, "bench", "data", "eval_reports.jsonl")


def pairwise(groups, labels, members):
    """Precision and recall over all pairs of `members`; None groups are singletons."""
    tp = fp = fn = 0
    for a, b in itertools.combinations(members, 2):
        same_label = labels[a] == labels[b]
        same_group = groups[a] is not None and groups[a] == groups[b]
        tp += same_label and same_group
        fp += same_group and not same_label
        fn += same_label and not same_group
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def held_out(report_id):
    return int(report_id[2:]) % 3 == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misgroupings", type=int, default=20)
    args = parser.parse_args()

    from app import create_app
    from app.auth import start_session
    from models import ROLE_SCOPES, Membership, Organization, User, Workspace, db

    with open(REPORTS) as handle:
        reports = [json.loads(line) for line in handle]
    folder = tempfile.mkdtemp(prefix="causeloop-grouping-")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder}/grouping.db", "USE_MOCK": True, "TESTING": True,
                      "RATE_LIMIT": "1000000/minute", "LOG_LEVEL": "WARNING"})
    with app.app_context(), db.connection_context():
        Organization.create(id="org_eval", name="Evaluation")
        Workspace.create(id="ws_eval", organization="org_eval", name="Evaluation")
        User.create(id="usr_eval", email="eval@example.test")
        Membership.create(id="mem_eval", user="usr_eval", workspace="ws_eval", role="owner")
        token = start_session("usr_eval", "ws_eval", ROLE_SCOPES["owner"])["access_token"]
    client, headers = app.test_client(), {"Authorization": f"Bearer {token}"}

    records = [{"source": r["source"], "external_id": r["id"], "title": r["title"], "body": r["body"],
                "severity": r["severity"]} for r in reports]
    issue_of = {}
    for start in range(0, len(records), 500):
        response = client.post("/v1/ingest/batch", headers=headers, json={"records": records[start:start + 500]})
        assert response.status_code == 202 and not response.get_json()["rejected"], response.get_json()
        for record, issue_id in zip(records[start:start + 500], response.get_json()["issue_ids"]):
            issue_of[record["external_id"]] = issue_id

    labels, groups, predicted = {}, {}, {}
    for report in reports:
        issue = client.get(f"/v1/issues/{issue_of[report['id']]}", headers=headers).get_json()
        labels[report["id"]] = (report["domain"], report["root_cause"])
        groups[report["id"]] = issue["pattern_id"]
        predicted[report["id"]] = issue["fingerprint"] and (issue["fingerprint"]["domain"],
                                                           issue["fingerprint"]["root_cause"])
    everyone = [r["id"] for r in reports]
    held = [r for r in everyone if held_out(r)]
    patterns = client.get("/v1/patterns?limit=100", headers=headers).get_json()["page"]["total"]
    print(f"evaluation set: {len(reports)} reports, {len(set(labels.values()))} root causes; "
          f"{patterns} patterns detected; {sum(1 for g in groups.values() if g is None)} issues left unlinked")
    for name, members in (("whole set", everyone), ("held-out third", held)):
        precision, recall = pairwise(groups, labels, members)
        print(f"grouping, {name:15} ({len(members):3d}): pairwise precision {precision:.3f}, recall {recall:.3f}")

    ids_by_issue = {issue_id: report_id for report_id, issue_id in issue_of.items()}
    top_hits = {}
    for report_id in everyone:
        body = client.get(f"/v1/issues/{issue_of[report_id]}/similar?limit=1", headers=headers).get_json()
        top = body["data"][0]["issue"]["id"] if body["data"] else None
        top_hits[report_id] = top is not None and labels[ids_by_issue[top]] == labels[report_id]
    for name, members in (("whole set", everyone), ("held-out third", held)):
        rate = sum(top_hits[r] for r in members) / len(members)
        print(f"similar@1, {name:15}: same root cause ranked first for {rate:.1%}")

    confusion = collections.Counter((labels[r][1], predicted[r][1] if predicted[r] else "(unclassified)")
                                    for r in everyone if predicted[r] != labels[r])
    print(f"misgroupings (label -> detected), top {args.misgroupings}:")
    for (label, guess), count in confusion.most_common(args.misgroupings):
        print(f"  {count:3d}  {label} -> {guess}")


if __name__ == "__main__":
    main()
