"""Audit-log page latency at depth: a 100,000-entry log (one workspace) read through the API.

Fills the log with insert_rows (realistic actions, actors, targets, timestamps over a year),
then times, in-process through the Flask test client (no HTTP server: the figure is the app
and the database), the first page, a page N pages deep (walking the keyset cursor there), an
action-prefix filter, an actor filter, a target filter and a time window, each repeated.

    .venv/bin/python bench/audit.py [--entries 100000] [--depth 500] [--database-url postgresql://...]
"""
import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WORKSPACE = "ws_01abc123"
ACTIONS = ["auth.signed_in", "auth.signed_out", "member.role_changed", "member.removed", "invitation.sent",
           "issue.bulk_updated", "pattern.merged", "grouping_rule.updated", "api_token.created"]


def fill(count, seed=1):
    from models import AuditEntry, new_id
    from models.base import db, insert_rows

    rng = random.Random(seed)
    start = datetime.datetime(2025, 1, 1)
    rows = []
    for n in range(count):
        at = start + datetime.timedelta(seconds=n * 300)
        rows.append({"id": new_id("aud"), "workspace": WORKSPACE, "occurred_at": at, "action": rng.choice(ACTIONS),
                     "actor_type": "user", "actor_id": f"usr_bench{rng.randrange(50):03d}",
                     "actor_display": "bench@example.test", "target_type": "member",
                     "target_id": f"mem_bench{rng.randrange(2000):05d}", "ip": "203.0.113.7",
                     "user_agent": "bench/1.0", "request_id": f"req_bench{n}", "changes": {"n": n}})
    with db.atomic():
        for first in range(0, len(rows), 1000):
            insert_rows(AuditEntry, rows[first:first + 1000])


def timed(client, headers, query, repeat):
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.get("/v1/audit-log", headers=headers, query_string=query)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)
    return statistics.median(samples), max(samples), response.get_json()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=500, help="pages of 100 to walk for the deep page")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    from app import create_app
    from app.auth import start_session
    from models import ROLE_SCOPES, db

    workdir = tempfile.mkdtemp(prefix="causeloop-audit-bench-")
    url = args.database_url or f"sqlite:///{workdir}/audit.db"
    app = create_app({"DATABASE_URL": url, "USE_MOCK": True, "TESTING": True, "RATE_LIMIT": "1000000/minute",
                      "LOG_LEVEL": "WARNING"})
    with app.app_context(), db.connection_context():
        began = time.perf_counter()
        fill(args.entries)
        print(f"filled {args.entries:,} entries in {time.perf_counter() - began:.1f} s ({url.split(':')[0]})")
        headers = {"Authorization": "Bearer " + start_session("usr_01abc456", WORKSPACE,
                                                              ROLE_SCOPES["owner"])["access_token"]}
    client = app.test_client()

    p50, worst, _ = timed(client, headers, {"limit": 100}, args.repeat)
    print(f"first page (100):             p50 {p50:7.2f} ms   max {worst:7.2f} ms")
    cursor, walked = None, 0
    began = time.perf_counter()
    while walked < args.depth - 1:
        body = client.get("/v1/audit-log", headers=headers,
                          query_string={"limit": 100, **({"cursor": cursor} if cursor else {})}).get_json()
        cursor, walked = body["page"]["next_cursor"], walked + 1
        if cursor is None:
            break
    walk_ms = (time.perf_counter() - began) * 1000
    print(f"walk to page {walked + 1}:              {walk_ms / max(walked, 1):7.2f} ms per page")
    if cursor:
        p50, worst, _ = timed(client, headers, {"limit": 100, "cursor": cursor}, args.repeat)
        print(f"page {walked + 1} (depth {walked * 100:,}):    p50 {p50:7.2f} ms   max {worst:7.2f} ms")
    for label, query in (("action=member.", {"action": "member."}), ("actor_id", {"actor_id": "usr_bench007"}),
                         ("target_id", {"target_id": "mem_bench00042"}),
                         ("one month (since/until)", {"since": "2025-06-01T00:00:00Z",
                                                      "until": "2025-07-01T00:00:00Z"})):
        p50, worst, body = timed(client, headers, {"limit": 100, **query}, args.repeat)
        print(f"{label:<29} p50 {p50:7.2f} ms   max {worst:7.2f} ms   total {body['page']['total']:,}")


if __name__ == "__main__":
    main()
