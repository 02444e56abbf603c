"""Lists at a million issues: five list/get requests against our API, Datasette and a bare app.

    .venv/bin/python bench/lists.py [--issues 1000000] [--patterns 300] [--seconds 10]

One run: generates the SQLite database under bench/.work/ with `flask generate` (or reuses it
when it is present and complete), serves it with the Procfile's web command (gunicorn,
app/gunicorn_conf.py, 2 workers), and measures each request with wrk on loopback (2 threads,
16 connections). Then the same requests against two references on the same data: Datasette
(installed into its own venv under bench/.work/, serving an export of the issues with an FTS5
index configured by sqlite-utils) and a bare Flask app under the same gunicorn settings that
returns a pre-serialised body the size of our first page. Prints requests/s, p50 and p99 of
each, the ratios, and the peak RSS of our gunicorn workers. Figures only, no assertions.

Needs wrk (`apt-get install -y wrk`; the script installs it when it runs as root with apt).
"""
import argparse
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", ".work")
DATABASE = os.path.join(WORK, "lists.db")
MARKER = os.path.join(WORK, "lists.json")
EXPORT = os.path.join(WORK, "causeloop.db")  # what Datasette serves, as /causeloop/issues
DATASETTE_VENV = os.path.join(WORK, "datasette-venv")
DATASETTE_REQUIREMENTS = ["datasette>=0.64,<1", "sqlite-utils>=3.35,<4"]
WORKSPACE = "ws_bench"
BIN = os.path.dirname(sys.executable)
STATUS_SEVERITY = {"status": "open,in_progress", "severity": "high,critical"}
DEEP = "deep page"  # the page --deep-pages pages in, at limit=100
FIRST_100 = "first page, limit=100"  # what the deep page compares with, like for like


# --- processes -----------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent():
    """In the child: get SIGTERM if this script dies, even by SIGKILL (Linux), so no server is
    left behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _exit_on_signal(signum, frame):
    sys.exit(f"stopped by signal {signum}")  # unwinds through every `finally`, which stops the servers


class Server:
    """A server process in its own process group, its output in a file; stopped on exit."""

    def __init__(self, name, command, env, ready_path, timeout=120):
        self.name = name
        self.port = int(env["PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-lists-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.tail()}")
            try:
                urllib.request.urlopen(self.base + ready_path, timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} did not answer within {timeout} s: {self.tail()}")

    def tail(self):
        with open(self.log.name, "rb") as handle:
            return handle.read()[-2000:].decode(errors="replace")

    def workers(self):
        """Pids of the direct children (gunicorn's workers)."""
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid:
                    children.append(int(entry))
        return sorted(children)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.log.close()
        os.unlink(self.log.name)


def loadavg():
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def memory_kb(pid, field):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def get_json(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def get_bytes(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=120) as response:
        return response.read()


# --- data ----------------------------------------------------------------------------------

def flask_env(database_url, secret):
    env = {key: value for key, value in os.environ.items() if key != "USE_MOCK"}
    return {**env, "DATABASE_URL": database_url, "JWT_SECRET": secret, "LOG_LEVEL": "WARNING"}


def ensure_database(args, secret):
    """The generated database, reused when the marker says it is complete; returns the marker."""
    url = f"sqlite:///{DATABASE}"
    env = flask_env(url, secret)
    flask = [os.path.join(BIN, "flask"), "--app", "wsgi"]
    wanted = {"issues": args.issues, "patterns": args.patterns, "seed": args.seed}
    marker = None
    if os.path.exists(MARKER) and os.path.exists(DATABASE):
        with open(MARKER) as handle:
            marker = json.load(handle)
        if {key: marker.get(key) for key in wanted} != wanted or not complete(marker):
            marker = None
    if marker is not None:
        # Later migrations (indexes) apply to a reused database too.
        subprocess.run(flask + ["migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
        print(f"data: reusing {os.path.relpath(DATABASE, ROOT)} ({args.issues:,} issues, {args.patterns} "
              f"patterns; generated in {marker['generate_seconds']:.1f} s wall clock)")
        return marker
    for path in (MARKER, DATABASE, DATABASE + "-wal", DATABASE + "-shm", EXPORT, EXPORT + "-wal", EXPORT + "-shm"):
        if os.path.exists(path):
            os.unlink(path)
    command = flask + ["generate", "--workspace", WORKSPACE, "--issues", str(args.issues),
                       "--patterns", str(args.patterns), "--seed", str(args.seed)]
    print("data: " + " ".join(command[1:]))
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    print("      " + "\n      ".join(result.stdout.strip().splitlines()))
    print(f"      wall clock (process start to exit, migrations included): {elapsed:.1f} s")
    owner = re.search(r"^owner: (usr_\w+)$", result.stdout, re.M).group(1)
    marker = {**wanted, "owner": owner, "generate_seconds": round(elapsed, 1)}
    if not complete(marker):
        raise RuntimeError("the generated database is not complete")
    with open(MARKER, "w") as handle:
        json.dump(marker, handle)
    return marker


def complete(marker):
    connection = sqlite3.connect(DATABASE)
    try:
        issues = connection.execute("SELECT COUNT(*) FROM issue WHERE workspace_id = ?", (WORKSPACE,)).fetchone()[0]
        patterns = connection.execute("SELECT COUNT(*) FROM pattern WHERE workspace_id = ?", (WORKSPACE,)).fetchone()[0]
    except sqlite3.Error:
        return False
    finally:
        connection.close()
    return issues == marker["issues"] and patterns == marker["patterns"]


def mint_token(secret, owner):
    sys.path.insert(0, ROOT)
    from app import create_app
    from app.auth import start_session
    from models import ROLE_SCOPES, db

    app = create_app({"DATABASE_URL": f"sqlite:///{DATABASE}", "JWT_SECRET": secret, "LOG_LEVEL": "WARNING"})
    with app.app_context(), db.connection_context():
        return start_session(owner, WORKSPACE, ROLE_SCOPES["owner"])["access_token"]


def ensure_datasette():
    """Datasette and sqlite-utils in their own venv; returns its bin folder."""
    bin_dir = os.path.join(DATASETTE_VENV, "bin")
    if not os.path.exists(os.path.join(bin_dir, "datasette")):
        print("datasette: installing into " + os.path.relpath(DATASETTE_VENV, ROOT))
        subprocess.run([sys.executable, "-m", "venv", DATASETTE_VENV], check=True)
        subprocess.run([os.path.join(bin_dir, "pip"), "install", "-q", *DATASETTE_REQUIREMENTS], check=True)
    return bin_dir


SEVERITY_NAMES = "CASE severity WHEN 0 THEN 'low' WHEN 1 THEN 'medium' WHEN 2 THEN 'high' ELSE 'critical' END"
EXPORT_VERSION = 2  # bump when the export changes, so an old one is rebuilt
EXPORT_INDEXES = [  # ours (migrations 0001-0006), without the workspace prefix: one workspace here
    "created_at, id", "updated_at, id", "severity, id", "status, severity", "risk_score, id",
    "pattern_id, created_at, id", "fingerprint_domain, fingerprint_root_cause"]


def ensure_export(bin_dir, issues):
    """The workspace's issues as a plain table `issues` (same columns; severity by name), with
    the same indexes and an FTS5 index made the Datasette way (sqlite-utils enable-fts)."""
    if os.path.exists(EXPORT):
        connection = sqlite3.connect(EXPORT)
        try:
            if connection.execute("PRAGMA user_version").fetchone()[0] == EXPORT_VERSION and \
                    connection.execute("SELECT COUNT(*) FROM issues").fetchone()[0] == issues and \
                    connection.execute("SELECT COUNT(*) FROM issues_fts WHERE issues_fts MATCH 'timeout'").fetchone():
                return
        except sqlite3.Error:
            pass
        finally:
            connection.close()
        for path in (EXPORT, EXPORT + "-wal", EXPORT + "-shm"):
            if os.path.exists(path):
                os.unlink(path)
    started = time.perf_counter()
    connection = sqlite3.connect(EXPORT)
    try:
        connection.execute("PRAGMA journal_mode = wal")
        connection.execute("ATTACH DATABASE ? AS source", (DATABASE,))
        # The same columns, types and NOT NULLs (Datasette pages a nullable sort column differently).
        info = connection.execute("PRAGMA source.table_info(issue)").fetchall()
        columns = [name for _, name, *_ in info]
        definitions = [f"{name} {'TEXT' if name == 'severity' else kind}{' NOT NULL' if not_null else ''}"
                       f"{' PRIMARY KEY' if pk else ''}" for _, name, kind, not_null, _, pk in info]
        connection.execute(f"CREATE TABLE issues ({', '.join(definitions)})")
        selected = ", ".join(SEVERITY_NAMES if c == "severity" else c for c in columns)
        connection.execute(f"INSERT INTO issues SELECT {selected} FROM source.issue WHERE workspace_id = ? "
                           "ORDER BY rowid", (WORKSPACE,))
        for number, index_columns in enumerate(EXPORT_INDEXES):
            connection.execute(f"CREATE INDEX issues_{number} ON issues ({index_columns})")
        connection.execute(f"PRAGMA user_version = {EXPORT_VERSION}")
        connection.commit()
    finally:
        connection.close()
    subprocess.run([os.path.join(bin_dir, "sqlite-utils"), "enable-fts", EXPORT, "issues", "title", "description",
                    "--fts5", "--tokenize", "porter", "--create-triggers"], check=True)
    print(f"datasette: exported {issues:,} issues with indexes and FTS5 in {time.perf_counter() - started:.1f} s")


# --- measuring -----------------------------------------------------------------------------

def ensure_wrk():
    if shutil.which("wrk"):
        return shutil.which("wrk")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk: installing with apt-get")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk (Debian/Ubuntu) or brew install wrk (macOS)")
    return shutil.which("wrk")


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def busy_ticks():
    """CPU time the whole machine spent busy, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def process_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total


def wrk(url, headers, seconds, server):
    """requests/s, p50 ms, p99 ms and non-2xx count of `url` under wrk, and the share of the
    machine that processes other than the server, wrk and this script used meanwhile."""
    for _ in range(10):  # warm: caches, lazily built state, the count of each worker
        try:
            get_bytes(url, headers)
        except urllib.error.HTTPError:
            pass  # e.g. Datasette's 400 for a query over its time limit: wrk counts them as non-2xx
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "30s", "--latency", url]
    for name, value in (headers or {}).items():
        command[1:1] = ["-H", f"{name}: {value}"]
    ours = [server.proc.pid, *server.workers(), os.getpid()]
    children = os.times()
    machine, mine, started = busy_ticks(), process_ticks(ours), time.monotonic()
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    elapsed, after = time.monotonic() - started, os.times()
    wrk_ticks = (after.children_user + after.children_system - children.children_user
                 - children.children_system) * os.sysconf("SC_CLK_TCK")
    others = busy_ticks() - machine - (process_ticks(ours) - mine) - wrk_ticks
    capacity = elapsed * os.sysconf("SC_CLK_TCK") * os.cpu_count()

    def latency(percent):
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M).groups()
        return float(value) * UNITS_MS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50": latency(50), "p99": latency(99),
            "errors": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
            "others": max(0.0, others / capacity)}


def walk_ours(base, headers, pages):
    """The cursor `pages` pages deep at limit=100."""
    cursor = None
    for _ in range(pages):
        url = base + "/v1/issues?limit=100" + (f"&cursor={cursor}" if cursor else "")
        cursor = get_json(url, headers)["page"]["next_cursor"]
    return cursor


def walk_datasette(base, pages):
    """Datasette's `next_url` `pages` pages deep at _size=100, newest first."""
    url = base + "/causeloop/issues.json?_size=100&_sort_desc=created_at"
    for _ in range(pages):
        url = get_json(url)["next_url"]
    return url


# --- the run -------------------------------------------------------------------------------

def measure_ours(args, secret, marker):
    token = mint_token(secret, marker["owner"])
    headers = {"Authorization": f"Bearer {token}"}
    env = {**flask_env(f"sqlite:///{DATABASE}", secret), "PORT": str(free_port()), "WEB_CONCURRENCY": "2",
           "RATE_LIMIT": "1000000000/minute"}
    with open(os.path.join(ROOT, "Procfile")) as handle:
        web = next(line.split(":", 1)[1].split() for line in handle if line.startswith("web:"))
    web[0] = os.path.join(BIN, web[0])
    server = Server("ours", web, env, "/health")
    try:
        base = server.base
        first = get_bytes(base + "/v1/issues?limit=25", headers)
        issue_id = json.loads(first)["data"][9]["id"]
        started = time.perf_counter()
        cursor = walk_ours(base, headers, args.deep_pages)
        walked = time.perf_counter() - started
        urls = {
            "first page": "/v1/issues?limit=25",
            "status+severity": "/v1/issues?limit=25&" + "&".join(f"{k}={v}" for k, v in STATUS_SEVERITY.items()),
            "q=timeout": "/v1/issues?limit=25&q=timeout",
            DEEP: f"/v1/issues?limit=100&cursor={cursor}",
            FIRST_100: "/v1/issues?limit=100",
            "single GET": f"/v1/issues/{issue_id}",
        }
        results = {}
        for name, path in urls.items():
            results[name] = wrk(base + path, headers, args.seconds, server)
            print(f"  ours      {name:24} {fmt(results[name])}", flush=True)
        memory = {pid: (memory_kb(pid, "VmHWM"), memory_kb(pid, "VmRSS")) for pid in server.workers()}
        return results, memory, first, issue_id, walked
    finally:
        server.stop()


def measure_datasette(args, bin_dir, issue_id):
    env = {**os.environ, "PORT": str(free_port())}
    # Facet suggestions would add a query per column to every JSON page: off, as for any large table.
    command = [os.path.join(bin_dir, "datasette"), "serve", EXPORT, "--host", "127.0.0.1", "--port", env["PORT"],
               "--setting", "suggest_facets", "off"]
    server = Server("datasette", command, env, "/-/versions.json")
    try:
        base = server.base
        started = time.perf_counter()
        deep = walk_datasette(base, args.deep_pages)
        walked = time.perf_counter() - started
        table = "/causeloop/issues.json?_size=25&_sort_desc=created_at"
        urls = {
            "first page": table,
            "first page, _nocount": table + "&_nocount=1",
            "status+severity": table + "&" + "&".join(f"{k}__in={v}" for k, v in STATUS_SEVERITY.items()),
            "q=timeout": table + "&_search=timeout",
            DEEP: deep[len(base):] if deep.startswith(base) else deep,
            "single GET": f"/causeloop/issues/{issue_id}.json",
        }
        results = {}
        for name, path in urls.items():
            results[name] = wrk(base + path, None, args.seconds, server)
            print(f"  datasette {name:24} {fmt(results[name])}", flush=True)
        return results, walked
    finally:
        server.stop()


def measure_bare(args, body):
    body_path = os.path.join(WORK, "bare_body.json")
    with open(body_path, "wb") as handle:
        handle.write(body)
    env = {**os.environ, "PORT": str(free_port()), "WEB_CONCURRENCY": "2", "BARE_BODY": body_path}
    command = [os.path.join(BIN, "gunicorn"), "-c", "app/gunicorn_conf.py", "--pythonpath", "bench", "lists_bare:app"]
    server = Server("bare", command, env, "/")
    try:
        result = wrk(server.base + "/v1/issues?limit=25", None, args.seconds, server)
        print(f"  bare      {'first page':24} {fmt(result)}", flush=True)
        return result
    finally:
        server.stop()


def fmt(result):
    errors = f"  non-2xx {result['errors']}" if result["errors"] else ""
    errors += f"  socket errors: {result['socket_errors']}" if result["socket_errors"] else ""
    busy = f"  [other processes used {result['others']:.0%} of the machine]" if result["others"] >= 0.05 else ""
    return f"{result['rps']:9.1f} req/s  p50 {result['p50']:8.2f} ms  p99 {result['p99']:8.2f} ms{errors}{busy}"


def ratio(mine, theirs):
    return mine["rps"] / theirs["rps"] if theirs["rps"] else float("inf")


def report(ours, datasette, bare, memory, first_body):
    print()
    print(f"{'':26}{'ours':>27} {'Datasette':>27} {'bare Flask':>27}   ours/DS  ours/bare")
    print(f"{'request':26}" + f"{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9} " * 3 + "   (req/s)   (req/s)")
    rows = [("first page", "first page", "first page"), ("first page", "first page, _nocount", None),
            ("status+severity",) * 2 + (None,), ("q=timeout",) * 2 + (None,),
            (DEEP,) * 2 + (None,), ("single GET",) * 2 + (None,)]

    def cells(result):
        return f"{result['rps']:9.1f}{result['p50']:9.2f}{result['p99']:9.2f} " if result else " " * 28

    for ours_name, ds_name, bare_name in rows:
        label = ds_name if ds_name != ours_name else ours_name
        mine, theirs, ceiling = ours[ours_name], datasette[ds_name], bare if bare_name else None
        line = f"{label:26}{cells(mine)}{cells(theirs)}{cells(ceiling)}"
        line += f"{ratio(mine, theirs):9.2f}x"
        line += f"{ratio(mine, ceiling):9.2f}x" if ceiling else ""
        print(line)
    print(f"{FIRST_100:26}{cells(ours[FIRST_100])}   (ours only: the deep page's like-for-like reference)")
    errors = {name: r["errors"] for name, r in {**ours, **{"DS " + k: v for k, v in datasette.items()}}.items()
              if r["errors"]}
    if bare["errors"]:
        errors["bare"] = bare["errors"]
    print(f"non-2xx responses: {errors or 'none'}")
    print(f"first page body: {len(first_body):,} bytes (the bare app returns the same bytes)")
    for pid, (peak, now) in memory.items():
        print(f"our gunicorn worker {pid}: peak RSS (VmHWM) {peak / 1024:.1f} MB, RSS at the end {now / 1024:.1f} MB")
    deep, first = ours[DEEP], ours["first page"]
    print()
    print("targets of the issue (for orientation; nothing is asserted):")
    checks = [
        ("first page >= 15% of bare", ratio(first, bare), 0.15),
        ("first page >= 3x Datasette without count", ratio(first, datasette["first page, _nocount"]), 3),
        ("status+severity >= 3x Datasette", ratio(ours["status+severity"], datasette["status+severity"]), 3),
        ("q=timeout >= 20x Datasette", ratio(ours["q=timeout"], datasette["q=timeout"]), 20),
        ("single GET >= 1.5x Datasette", ratio(ours["single GET"], datasette["single GET"]), 1.5),
    ]
    for label, value, target in checks:
        print(f"  {label:44} {value:8.2f}   {'met' if value >= target else 'MISSED'}")
    print(f"  {'q=timeout p50 < 50 ms':44} {ours['q=timeout']['p50']:8.2f}   "
          f"{'met' if ours['q=timeout']['p50'] < 50 else 'MISSED'}")
    for label, other in (("limit=25", first), ("limit=100", ours[FIRST_100])):
        depth = deep["p50"] / other["p50"]
        print(f"  {'deep page p50 <= 1.3x first page p50':44} {depth:8.2f}   {'met' if depth <= 1.3 else 'MISSED'}"
              f"   (deep page at limit=100, first page at {label})")
    peak = max((p for p, _ in memory.values()), default=0) / 1024
    print(f"  {'peak RSS per worker < 150 MB':44} {peak:8.1f}   {'met' if peak < 150 else 'MISSED'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=1_000_000)
    parser.add_argument("--patterns", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each measurement")
    parser.add_argument("--deep-pages", type=int, default=400, help="how deep the deep page is (pages of 100)")
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    args.deep_pages = max(1, min(args.deep_pages, (args.issues - 1) // 100))
    os.makedirs(WORK, exist_ok=True)
    ensure_wrk()
    secret = secrets.token_urlsafe(48)
    print(f"machine: {os.cpu_count()} cores, SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}; "
          f"wrk -t2 -c16 -d{args.seconds}s on loopback, after 10 warm-up requests each; "
          f"deep page = {args.deep_pages} pages of 100 in; load average before: {loadavg()}")
    marker = ensure_database(args, secret)
    bin_dir = ensure_datasette()
    ensure_export(bin_dir, args.issues)
    version = subprocess.run([os.path.join(bin_dir, "datasette"), "--version"], capture_output=True, text=True).stdout
    print(f"servers: ours = Procfile web (gunicorn gthread, 2 workers, LOG_LEVEL=WARNING, rate limit raised); "
          f"{version.strip()} (one process, facet suggestions off); bare Flask under app/gunicorn_conf.py, 2 workers")
    ours, memory, first_body, issue_id, walked = measure_ours(args, secret, marker)
    print(f"  (ours: walking {args.deep_pages} pages of 100 took {walked:.1f} s)")
    datasette, ds_walked = measure_datasette(args, bin_dir, issue_id)
    print(f"  (Datasette: walking {args.deep_pages} pages of 100 took {ds_walked:.1f} s)")
    bare = measure_bare(args, first_body)
    report(ours, datasette, bare, memory, first_body)
    print(f"load average after: {loadavg()} (other processes on the machine skew every figure)")


if __name__ == "__main__":
    main()
