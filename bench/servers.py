"""Servers the benches run: a throwaway PostgreSQL (.ci/postgres) and the Procfile's web process."""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from test_server import free_port, run_procfile_web, stop  # noqa: E402,F401  (the suite's launcher)


@contextlib.contextmanager
def postgres():
    """A fresh PostgreSQL server on loopback; yields its DATABASE_URL, stops it afterwards."""
    folder = tempfile.mkdtemp(prefix="causeloop-bench-pg-")
    url = subprocess.run(["bash", ".ci/postgres", "start", folder], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run(["bash", ".ci/postgres", "stop", folder], cwd=ROOT)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def web(env):
    """The Procfile's web process with `env`; yields (process, base URL)."""
    proc, base = run_procfile_web({**os.environ, "PORT": str(free_port()), **env})
    try:
        yield proc, base
    finally:
        stop(proc)
