"""List endpoints at a million issues, against two references, in one run.

    .venv/bin/python bench/lists.py [--issues 1000000] [--seconds 10]

1. Generates (or reuses) bench/.work/lists.db: `flask generate` with 1M issues on SQLite.
2. Serves it with the Procfile's gunicorn settings (2 workers) and measures with wrk on loopback
   (10 s, 16 connections, 2 threads): first page newest-first; status+severity filtered;
   q=timeout; a page 400 pages deep at limit=100 (cursor got by walking); one issue by id.
3. Runs the same queries against Datasette (its own venv under bench/.work/, an equivalent table
   with FTS5) and against a bare Flask app under the same gunicorn settings that returns a
   pre-serialised body of our first page's size (the stack's ceiling).
Prints requests/s and p50/p99 for each, ratios ours/Datasette and ours/bare, and peak RSS per
worker. Figures only: nothing here asserts a timing. Needs `wrk` (apt-get install wrk).
"""
import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

import requests

from servers import ROOT, free_port, web

WORK = os.path.join(ROOT, "bench", ".work")
DB = os.path.join(WORK, "lists.db")
DATASETTE_DB = os.path.join(WORK, "datasette.db")
DATASETTE_VENV = os.path.join(WORK, "datasette-venv")
SECRET = "bench-secret-0123456789-0123456789-abcdef"
WORKSPACE = "ws_bench"
WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def sh(*command, **kwargs):
    return subprocess.run(command, cwd=ROOT, check=True, **kwargs)


def generate(count):
    """The 1M-issue database, made once and reused while it holds `count` issues."""
    if os.path.exists(DB):
        with sqlite3.connect(DB) as connection:
            try:
                have = connection.execute("SELECT count(*) FROM issue WHERE workspace_id = ?", (WORKSPACE,)).fetchone()[0]
            except sqlite3.Error:
                have = 0
        if have == count:
            print(f"reusing {DB} ({have} issues)", flush=True)
            # The Procfile's release step: a database made by an older version gets new migrations.
            sh(os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", "migrate",
               env={**os.environ, "DATABASE_URL": f"sqlite:///{DB}", "JWT_SECRET": SECRET})
            return
        os.remove(DB)
    os.makedirs(WORK, exist_ok=True)
    started = time.monotonic()
    sh(os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", "generate", "--workspace",
       WORKSPACE, "--issues", str(count), "--patterns", "300",
       env={**os.environ, "DATABASE_URL": f"sqlite:///{DB}", "JWT_SECRET": SECRET})
    print(f"generated {count} issues in {time.monotonic() - started:.0f} s", flush=True)


def owner_token():
    sys.path.insert(0, ROOT)
    from app import create_app
    from app.auth import start_session
    from models import ROLE_SCOPES, Membership, db

    app = create_app({"DATABASE_URL": f"sqlite:///{DB}", "JWT_SECRET": SECRET, "USE_MOCK": False,
                      "LOG_LEVEL": "WARNING"})
    with app.app_context(), db.connection_context():
        owner = Membership.get(Membership.workspace == WORKSPACE)
        return start_session(owner.user_id, WORKSPACE, ROLE_SCOPES["owner"])["access_token"]


def wrk(url, seconds, headers=()):
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for header in headers:
        command += ["-H", header]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {q: float(v) * UNIT_MS[u] for q, v, u in WRK_LATENCY.findall(out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rate, "p50": latency.get("50"), "p99": latency.get("99"),
            "non2xx": int(errors.group(1)) if errors else 0}


def walk(first_url, next_of, pages, headers=None):
    url = first_url
    for _ in range(pages):
        body = requests.get(url, headers=headers or {}, timeout=60).json()
        url = next_of(body)
        if url is None:
            raise RuntimeError("ran out of pages")
    return url


def worker_rss_mb(master_pid):
    peaks = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as handle:
                status = handle.read()
        except OSError:
            continue
        if re.search(rf"^PPid:\s+{master_pid}$", status, re.M):
            peaks.append(int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024)
    return peaks


def measure_ours(seconds):
    token = owner_token()
    auth = f"Authorization: Bearer {token}"
    env = {"DATABASE_URL": f"sqlite:///{DB}", "JWT_SECRET": SECRET, "WEB_CONCURRENCY": "2",
           "RATE_LIMIT": "100000000/minute", "LOG_LEVEL": "WARNING"}
    with web(env) as (proc, base):
        headers = {"Authorization": f"Bearer {token}"}
        first = requests.get(base + "/v1/issues?limit=25", headers=headers, timeout=60)
        sample_id = first.json()["data"][0]["id"]
        deep = walk(base + "/v1/issues?limit=100",
                    lambda body: body["page"]["next_cursor"] and f"{base}/v1/issues?limit=100&cursor={body['page']['next_cursor']}",
                    400, headers)
        urls = {
            "first page": base + "/v1/issues?limit=25",
            "status+severity": base + "/v1/issues?limit=25&status=open,in_progress&severity=high,critical",
            "q=timeout": base + "/v1/issues?limit=25&q=timeout",
            "400 pages deep": deep,
            "first page (limit=100)": base + "/v1/issues?limit=100",
            "GET one": f"{base}/v1/issues/{sample_id}",
        }
        results = {}
        for name, url in urls.items():
            results[name] = wrk(url, seconds, [auth])
            print(line(f"ours: {name}", results[name]), flush=True)
        rss = worker_rss_mb(proc.pid)
    return results, len(first.content), sample_id, rss


def build_datasette_db():
    """The same issues as a plain table with FTS5, set up the way Datasette expects."""
    if os.path.exists(DATASETTE_DB):
        return
    with sqlite3.connect(DATASETTE_DB) as connection:
        connection.execute(f"ATTACH DATABASE '{DB}' AS src")
        connection.execute("""
            CREATE TABLE issues AS SELECT id, title, description, status,
                CASE severity WHEN 0 THEN 'low' WHEN 1 THEN 'medium' WHEN 2 THEN 'high' ELSE 'critical' END AS severity,
                pattern_id, source, external_id, team, risk_score, created_at, updated_at, resolved_at
            FROM src.issue WHERE workspace_id = ?""", (WORKSPACE,))
        connection.commit()
        connection.execute("DETACH DATABASE src")
        connection.execute("CREATE UNIQUE INDEX issues_id ON issues (id)")
        connection.execute("CREATE INDEX issues_created_at ON issues (created_at)")
        connection.execute("CREATE INDEX issues_status_severity ON issues (status, severity, created_at)")
    sh(os.path.join(DATASETTE_VENV, "bin", "sqlite-utils"), "enable-fts", DATASETTE_DB, "issues", "title",
       "description", "--fts5")


def datasette_next_token(offset):
    """The `_next` token Datasette's own paging gives after `offset` rows sorted by created_at
    descending: "<created_at>,<rowid>" of the last row before it (walking 400 pages through
    Datasette to obtain it takes longer than the whole measurement)."""
    with sqlite3.connect(DATASETTE_DB) as connection:
        created_at, rowid = connection.execute(
            "SELECT created_at, rowid FROM issues ORDER BY created_at DESC, rowid DESC LIMIT 1 OFFSET ?",
            (offset - 1,)).fetchone()
    return requests.utils.quote(f"{created_at},{rowid}", safe="")


def measure_datasette(seconds, sample_id):
    if not os.path.exists(os.path.join(DATASETTE_VENV, "bin", "datasette")):
        sh(sys.executable, "-m", "venv", DATASETTE_VENV)
        sh(os.path.join(DATASETTE_VENV, "bin", "pip"), "install", "-q", "datasette>=0.65,<0.66", "sqlite-utils>=3.35,<4")
    build_datasette_db()
    port = free_port()
    proc = subprocess.Popen([os.path.join(DATASETTE_VENV, "bin", "datasette"), "serve", DATASETTE_DB, "-p", str(port),
                             "--setting", "sql_time_limit_ms", "60000", "--setting", "facet_time_limit_ms", "1",
                             "--setting", "default_facet_size", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/datasette/issues"
    try:
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        deep = base + ".json?_size=100&_sort_desc=created_at&_nocount=1&_next=" + datasette_next_token(400 * 100)
        urls = {
            "first page": base + ".json?_size=25&_sort_desc=created_at",
            "first page, no count": base + ".json?_size=25&_sort_desc=created_at&_nocount=1",
            "status+severity": base + ".json?_size=25&_sort_desc=created_at&status__in=open,in_progress&severity__in=high,critical",
            "q=timeout": base + ".json?_size=25&_sort_desc=created_at&_search=timeout",
            "400 pages deep": deep,
            "GET one": f"{base}/{sample_id}.json",
        }
        results = {}
        for name, url in urls.items():
            results[name] = wrk(url, seconds)
            print(line(f"datasette: {name}", results[name]), flush=True)
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def measure_bare(seconds, size):
    env = {"BARE_BODY_BYTES": str(size), "WEB_CONCURRENCY": "2"}
    port = free_port()
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-c", "app/gunicorn_conf.py",
                             "--bind", f"127.0.0.1:{port}", "bench.bare_app:app"], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        return wrk(f"http://127.0.0.1:{port}/", seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def line(name, result):
    return (f"  {name:24} {result['rps']:9.1f} req/s  p50 {result['p50'] or float('nan'):8.2f} ms  "
            f"p99 {result['p99'] or float('nan'):8.2f} ms" + (f"  ({result['non2xx']} non-2xx!)" if result["non2xx"] else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    generate(args.issues)
    ours, size, sample_id, rss = measure_ours(args.seconds)
    theirs = measure_datasette(args.seconds, sample_id)
    bare = measure_bare(args.seconds, size)

    print(f"\n{args.issues} issues, SQLite; wrk 2 threads x 16 connections x {args.seconds} s; gunicorn 2 workers")
    print("Causeloop:")
    for name, result in ours.items():
        print(line(name, result))
    print("Datasette 0.65:")
    for name, result in theirs.items():
        print(line(name, result))
    print(f"bare Flask, same gunicorn settings, {size}-byte body:")
    print(line("pre-serialised", bare))
    print("ratios:")
    print(f"  first page / bare               {ours['first page']['rps'] / bare['rps']:6.1%}")
    for name, reference in (("first page", "first page, no count"), ("first page", "first page"),
                            ("status+severity", "status+severity"), ("q=timeout", "q=timeout"),
                            ("400 pages deep", "400 pages deep"), ("GET one", "GET one")):
        ratio = ours[name]["rps"] / theirs[reference]["rps"] if theirs[reference]["rps"] else float("inf")
        print(f"  {name:16} / Datasette {reference:22} {ratio:8.1f}x")
    print(f"  400 pages deep p50 / first page (limit=100) p50  "
          f"{ours['400 pages deep']['p50'] / ours['first page (limit=100)']['p50']:.2f}")
    print(f"peak RSS per worker: {', '.join(f'{mb:.0f} MB' for mb in rss)}")


if __name__ == "__main__":
    main()
