"""Audit-log page cost at depth: a 100,000-entry log (one workspace) read through the API.

Fills the log with insert_rows (actions skewed as a real log's are: sign-ins most, a retention
change a handful of times; 50 actors, 2,000 targets; a year of timestamps), then, for each
filter the route takes (none, an action prefix that is common, one that is middling and one
that is rare, an actor, a target, a one-month window, actor and action together), walks the
keyset cursor from the first page to the last and times the first, the middle and the last
page of that chain, each requested `--repeat` times, in-process through the Flask test client
(no HTTP server: the figure is the app and the database).

A page's `total` is counted once per filter and then kept (app/pagination.py count_matches);
the `+count` column times the page with that count made again each time, the most a page
costs (once per filter every RECENT_COUNT_TTL_S at most).

    .venv/bin/python bench/audit.py [--entries 100000] [--repeat 15] [--database-url postgresql://...]
"""
import argparse
import datetime
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WORKSPACE = "ws_01abc123"
# (action, weight): a log is mostly sign-ins; retention changes are rare.
ACTIONS = [("auth.signed_in", 400), ("auth.signed_out", 200), ("issue.bulk_updated", 120),
           ("api_token.created", 40), ("grouping_rule.updated", 40), ("pattern.merged", 30),
           ("member.role_changed", 20), ("member.removed", 10), ("invitation.sent", 2),
           ("invitation.accepted", 1), ("retention.changed", 1)]
FILTERS = [("(none)", {}),
           ("action=auth. (68%)", {"action": "auth."}),
           ("action=member. (3.4%)", {"action": "member."}),
           ("action=invitation. (0.3%)", {"action": "invitation."}),
           ("action=retention. (0.1%)", {"action": "retention."}),
           ("actor_id (2%)", {"actor_id": "usr_bench007"}),
           ("target_id (0.05%)", {"target_id": "mem_bench00042"}),
           ("since/until (one month)", {"since": "2025-06-01T00:00:00Z", "until": "2025-07-01T00:00:00Z"}),
           ("actor_id + action=auth.", {"actor_id": "usr_bench007", "action": "auth."})]


def fill(count, seed=1):
    from models import AuditEntry, new_id
    from models.base import db, insert_rows, is_postgres

    rng = random.Random(seed)
    names, weights = zip(*ACTIONS)
    start = datetime.datetime(2025, 1, 1)
    rows = []
    for n in range(count):
        at = start + datetime.timedelta(seconds=n * 300)
        rows.append({"id": new_id("aud"), "workspace": WORKSPACE, "occurred_at": at,
                     "action": rng.choices(names, weights)[0],
                     "actor_type": "user", "actor_id": f"usr_bench{rng.randrange(50):03d}",
                     "actor_display": "bench@example.test", "target_type": "member",
                     "target_id": f"mem_bench{rng.randrange(2000):05d}", "ip": "203.0.113.7",
                     "user_agent": "bench/1.0", "request_id": f"req_bench{n}", "changes": {"n": n}})
    with db.atomic():
        for first in range(0, len(rows), 1000):
            insert_rows(AuditEntry, rows[first:first + 1000])
    if is_postgres():
        db.execute_sql("VACUUM ANALYZE audit_entry")  # as autovacuum would soon after such a load


def chain(client, headers, query):
    """Every page's cursor from the first page (None) to the last, and the matches' total."""
    cursors, cursor, total = [None], None, None
    while True:
        body = get(client, headers, query, cursor).get_json()
        total = body["page"]["total"]
        cursor = body["page"]["next_cursor"]
        if cursor is None:
            return cursors, total
        cursors.append(cursor)


def get(client, headers, query, cursor):
    response = client.get("/v1/audit-log", headers=headers,
                          query_string={"limit": 100, **query, **({"cursor": cursor} if cursor else {})})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def page_ms(app, client, headers, query, cursor, repeat, recount):
    samples = []
    for _ in range(repeat):
        if recount:
            app.extensions.get("causeloop.recent_counts", {}).clear()
        began = time.perf_counter()
        get(client, headers, query, cursor)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="causeloop-audit-bench-")
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir):
    from app import create_app
    from app.auth import start_session
    from models import ROLE_SCOPES, db

    url = args.database_url or f"sqlite:///{workdir}/audit.db"
    app = create_app({"DATABASE_URL": url, "USE_MOCK": True, "TESTING": True, "RATE_LIMIT": "1000000/minute",
                      "LOG_LEVEL": "WARNING"})
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with app.app_context(), db.connection_context():
        began = time.perf_counter()
        fill(args.entries)
        print(f"filled {args.entries:,} entries in {time.perf_counter() - began:.1f} s ({url.split(':')[0]})")
        headers = {"Authorization": "Bearer " + start_session("usr_01abc456", WORKSPACE,
                                                              ROLE_SCOPES["owner"])["access_token"]}
    client = app.test_client()

    print(f"ms per page of 100, p50 of {args.repeat}; `+count` counts the total again each time")
    print(f"{'filter':<26} {'matches':>8} {'pages':>6}   {'first':>6} {'middle':>7} {'last':>6}"
          f"   {'first+count':>11} {'last+count':>10}")
    for label, query in FILTERS:
        cursors, total = chain(client, headers, query)
        ends = (cursors[0], cursors[len(cursors) // 2], cursors[-1])
        warm = [page_ms(app, client, headers, query, cursor, args.repeat, False) for cursor in ends]
        counted = [page_ms(app, client, headers, query, cursor, args.repeat, True) for cursor in (ends[0], ends[2])]
        print(f"{label:<26} {total:>8,} {len(cursors):>6}   {warm[0]:6.2f} {warm[1]:7.2f} {warm[2]:6.2f}"
              f"   {counted[0]:11.2f} {counted[1]:10.2f}")
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
